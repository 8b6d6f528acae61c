"""Neon's conf-file steps around the catalog apply (``configure_as_primary``, ``reconfigure``).

- ``temp_override``: while the spec is applied, ``<pgdata>/compute_ctl_temp_override.conf``
  holds exactly ``neon.max_cluster_size=-1`` (no newline) and postgres is reloaded, so
  creating roles, databases and extensions cannot fail on the cluster-size limit;
  afterwards the file is truncated to 0 bytes (not deleted), whether the apply succeeded
  or not. ``postgresql.conf`` includes it last, so it wins over the spec's settings.
- after a Primary start's apply, Neon's "line in file" (``line_in_file``):
  ``neon.disable_logical_replication_subscribers=false`` is appended to ``postgresql.conf``
  (after a ``\\n`` when the file is not empty, no trailing newline) unless that exact line
  is already there; it comes after the ``include_if_exists`` line, so it wins.

On vanilla PostgreSQL both ``neon.*`` names are inert placeholders (dotted names are
accepted in conf files); the mechanics are the same. The launcher (``LocalLauncher``)
calls the file functions, the node sequences them and reloads. Files keep their owner
(the PostgreSQL OS user): they are written in place, and a missing override file is
created and handed to ``user``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from compute_ctl.compute import pgconf, pgtools

__all__ = ["OVERRIDE_TEXT", "SUBSCRIBERS_LINE", "line_in_file", "temp_override", "write_override"]

logger = logging.getLogger(__name__)

OVERRIDE_TEXT = "neon.max_cluster_size=-1"
SUBSCRIBERS_LINE = "neon.disable_logical_replication_subscribers=false"


def write_override(*, pgdata: Path, text: str, user: pgtools.OsUser) -> None:
    """(Re)write the override file in place (it keeps its owner); create it if missing."""
    path = pgdata / pgconf.OVERRIDE_FILE
    existed = path.exists()
    with open(path, "w") as f:
        f.write(text)
    if not existed:
        path.chmod(0o600)
        user.chown(path)


def line_in_file(path: Path, line: str) -> bool:
    """Neon's ``line_in_file``: append ``line`` (after a ``\n`` when the file is not
    empty, no trailing newline) unless a line is exactly ``line``; True when appended."""
    text = path.read_text()
    if line in text.split("\n"):
        return False
    with open(path, "a") as f:
        f.write(("\n" if text else "") + line)
    logger.info("appended %s to %s", line, path.name)
    return True


@contextlib.asynccontextmanager
async def temp_override(
    *,
    write: Callable[[str], None],
    reload: Callable[[], Awaitable[None]],
) -> AsyncIterator[None]:
    """Neon's ``with_compute_ctl_tmp_override``: write, reload, run the body, truncate.

    ``write`` is the launcher's (it owns PGDATA's files). The truncation runs even when
    the body fails (the body's error is re-raised); the caller reloads afterwards if it
    needs postgres to forget the override at once."""
    write(OVERRIDE_TEXT)
    try:
        await reload()
        yield
    finally:
        write("")
