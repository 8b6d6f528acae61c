"""The compute's error tree. Foreign errors are translated at the boundary, cause chained.

::

    ComputeError
    ├── InputError           the caller's input is wrong: nothing was touched (HTTP 400,
    │   │                    CLI exit 2)
    │   ├── ConfigError      bad CLI flags, config file or spec
    │   │   └── AdmissionError   a config or spec refused by admission (names the field)
    │   └── NotFound         a database, role or schema the request names does not exist (404)
    ├── PostgresError        postgres or one of its tools failed to start, run or stop
    │   └── PostgresExited   the postmaster exited (carries its exit code)
    ├── ApplyError           a catalog operation failed (names the phase and the object)
    ├── StorageError         safekeepers or pageserver could not be reached or disagreed
    ├── StatusError          the request is not allowed in the current status (HTTP 412)
    └── Busy                 too many of these requests at once; retry later (HTTP 503)
"""

from __future__ import annotations

__all__ = [
    "AdmissionError",
    "ApplyError",
    "Busy",
    "ComputeError",
    "ConfigError",
    "InputError",
    "NotFound",
    "PostgresError",
    "PostgresExited",
    "StatusError",
    "StorageError",
]


class ComputeError(Exception):
    """Root of every error compute_ctl raises on purpose."""


class InputError(ComputeError):
    """The caller's input is at fault, and nothing was changed. The message names the
    field or object; it is safe to show to the client (never a secret)."""


class ConfigError(InputError):
    """Invalid flags, config file or spec. Raised before anything is changed."""


class AdmissionError(ConfigError):
    """A config or spec refused by ``compute.admission``: HTTP 400, CLI exit 2."""


class NotFound(InputError):
    """The request names a database, role, schema or other object that does not exist."""


class PostgresError(ComputeError):
    """postgres, initdb or another PostgreSQL tool failed."""


class PostgresExited(PostgresError):
    def __init__(self, returncode: int) -> None:
        super().__init__(f"postgres exited with code {returncode}")
        self.returncode = returncode


class ApplyError(ComputeError):
    """A catalog operation failed: names the phase and the object, never a secret."""

    def __init__(self, message: str, *, phase: str, obj: str | None = None) -> None:
        super().__init__(message)
        self.phase = phase
        self.obj = obj


class StorageError(ComputeError):
    """Safekeeper sync or pageserver basebackup failed."""


class StatusError(ComputeError):
    """The operation is not allowed in the current status."""


class Busy(ComputeError):
    """A bounded resource (pg_dump slots, connections) is in use; the caller may retry."""
