"""What a crash leaves in a kept PGDATA, removed at the next start.

- Temp files of compute_ctl's own writes (``safefs``), and the names older versions used:
  removed before anything is written.
- Database directories of an interrupted ``CREATE DATABASE``: PostgreSQL copies the
  template into ``base/<oid>`` before the ``pg_database`` row commits, so a crash in
  between (a parallel apply creates several) leaves directories no database owns. Once
  postgres is up, a numeric directory under ``base/`` whose OID is not in ``pg_database``
  and which is older than this start is removed. The listing comes before the query and
  only older directories count, so a database being created right now is never touched.

Best effort: a failure here is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from compute_ctl.compute import safefs

__all__ = ["orphan_database_dirs", "remove_orphan_database_dirs", "remove_temp_files"]

logger = logging.getLogger(__name__)

# Temp names of the files compute_ctl wrote before it used ``safefs``.
_LEGACY_TEMPS = frozenset(
    f".{name}.tmp" for name in ("postgresql.conf", "pg_hba.conf", "compute_ctl_temp_override.conf")
)


def remove_temp_files(pgdata: Path) -> None:
    """Remove the temp files a failed write left in PGDATA (at start, before any write)."""
    if not pgdata.is_dir():
        return
    for name in safefs.remove_temp_files(pgdata, legacy=_LEGACY_TEMPS):
        logger.info("removed a leftover temp file %s", pgdata / name)


def _old_numeric_dirs(base: Path, older_than: float) -> set[int]:
    found = set()
    with os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.isdigit() or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime < older_than:
                found.add(int(entry.name))
    return found


def orphan_database_dirs(pgdata: Path, *, candidates: set[int], oids: set[int]) -> list[Path]:
    """The directories of ``candidates`` (listed before ``oids`` was read) no database owns."""
    return [pgdata / "base" / str(oid) for oid in sorted(candidates - oids)]


async def remove_orphan_database_dirs(pgdata: Path, *, connstr: str, older_than: float) -> None:
    """Remove ``base/<oid>`` directories older than ``older_than`` (a wall-clock time, the
    start) that no row of ``pg_database`` owns. Postgres must be up."""
    import psycopg  # lazily: libpq loads off the start-up path (cli)

    from compute_ctl.compute import pgsession

    try:
        candidates = await asyncio.to_thread(_old_numeric_dirs, pgdata / "base", older_than)
        if not candidates:
            return
        async with pgsession.connect(connstr, application_name="compute_ctl:leftovers") as conn:
            cur = await conn.execute("select oid::int8 from pg_catalog.pg_database")
            oids = {int(row[0]) for row in await cur.fetchall()}
        for path in orphan_database_dirs(pgdata, candidates=candidates, oids=oids):
            logger.warning(
                "removing %s: no database owns it (an interrupted CREATE DATABASE)", path
            )
            await asyncio.to_thread(shutil.rmtree, path)
    except (OSError, psycopg.Error) as e:
        logger.warning("could not clean orphan database directories: %s", e)
