"""A hot standby of a vanilla PostgreSQL primary (beyond Neon: ``primary_connstring``).

The compute starts from ``pg_basebackup -D <pgdata> -R -X stream -c fast`` of the
primary, run as the OS user with the node's PostgreSQL tools; ``-R`` writes
``standby.signal`` and ``primary_conninfo``, so postgres follows the primary as a hot
standby. The password travels in ``PGPASSWORD``, never on a command line or in a
log line. At terminate the last replayed LSN (``pg_last_wal_replay_lsn()``) is the
compute's final LSN; it must be read before postgres stops.

Owns the clone and the replay LSN; the standby's settings are pgconf's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

import psycopg

from compute_ctl.compute import errors, pgtools, safefs

__all__ = ["clone_primary", "replay_lsn"]

logger = logging.getLogger(__name__)

_CONF = "postgresql.conf"
_CONF_MAX = 16 << 20


def _split_password(connstring: str) -> tuple[str, str | None]:
    params = psycopg.conninfo.conninfo_to_dict(connstring)
    password = params.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **params), (
        str(password) if password is not None else None
    )


def _empty_keeping(pgdata: Path) -> bytes | None:
    """Empty PGDATA for pg_basebackup, returning the conf that was there (if any)."""
    kept = safefs.read_bytes(pgdata, _CONF, limit=_CONF_MAX)
    for entry in pgdata.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return kept


async def clone_primary(
    *,
    primary_connstring: str,
    pgdata: Path,
    tools: pgtools.PgTools,
) -> int:
    """``pg_basebackup`` the primary into ``pgdata``; returns the elapsed milliseconds.

    ``pgdata`` must exist; a ``postgresql.conf`` already written there (Neon writes the
    conf before fetching the data) is kept over the primary's.
    """
    start = time.monotonic()
    kept = await asyncio.to_thread(_empty_keeping, pgdata)
    conninfo, password = _split_password(primary_connstring)
    env = {"PGPASSWORD": password} if password is not None else {}
    argv: list[str | os.PathLike[str]] = [
        tools.tool("pg_basebackup"),
        "--pgdata",
        pgdata,
        "--dbname",
        conninfo,
        "--write-recovery-conf",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-password",
    ]
    try:
        await tools.run(argv, env=env)
    except errors.PostgresError as e:
        raise errors.StorageError(f"cloning the primary failed: {e}") from None
    if kept is not None:
        # pg_basebackup ran as the OS user: PGDATA's contents are its, links included.
        safefs.write_bytes(pgdata, _CONF, kept, owner=tools.user)
    elapsed = int((time.monotonic() - start) * 1000)
    logger.info("cloned the primary into %s in %d ms", pgdata, elapsed)
    return elapsed


async def replay_lsn(connstr: str) -> str | None:
    """``pg_last_wal_replay_lsn()`` of the local standby (``None`` if not in recovery)."""
    async with await psycopg.AsyncConnection.connect(connstr, autocommit=True) as conn:
        cur = await conn.execute("select pg_last_wal_replay_lsn()::text")
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])
