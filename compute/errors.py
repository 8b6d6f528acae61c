"""The compute's error tree. Foreign errors are translated at the boundary, cause chained.

::

    ComputeError
    ├── ConfigError          bad CLI flags, config file or spec: nothing was touched
    │   └── AdmissionError   a config or spec refused by admission (names the field)
    ├── PostgresError        postgres or one of its tools failed to start, run or stop
    │   └── PostgresExited   the postmaster exited (carries its exit code)
    ├── ApplyError           a catalog operation failed (names the phase and the object)
    ├── StorageError         safekeepers or pageserver could not be reached or disagreed
    └── StatusError          the request is not allowed in the current status (HTTP 412)
"""

from __future__ import annotations

__all__ = [
    "AdmissionError",
    "ApplyError",
    "ComputeError",
    "ConfigError",
    "PostgresError",
    "PostgresExited",
    "StatusError",
    "StorageError",
]


class ComputeError(Exception):
    """Root of every error compute_ctl raises on purpose."""


class ConfigError(ComputeError):
    """Invalid flags, config file or spec. Raised before anything is changed."""


class AdmissionError(ConfigError):
    """A config or spec refused by ``compute.admission``: HTTP 400, CLI exit 2."""


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
