"""The migration runner: Neon's ``MigrationRunner`` (``compute_tools/src/migration.rs``).

Progress lives in the cluster, in ``neon_migration.migration_id`` (one row, ``id`` = how
many migrations are applied), so a compute started on any branch continues where the
cluster is. Each pending migration runs in its own transaction together with the bump of
``id``; a file starting with ``-- SKIP`` only bumps it. The first failure stops the run,
counts in ``compute_ctl_db_migration_failed_total{migration_id}`` and leaves ``id`` at the
last committed migration, so the next start retries from there. A stored id beyond the
list (a downgrade) runs nothing.

The files are templates: ``{privileged_role_name}`` becomes the quoted identifier of the
privileged role and ``{privileged_role_literal}`` its quoted literal (composed with
``psycopg.sql``; Neon pastes the name unquoted). A file is sent as one simple query, so
it may hold several statements.

Differences from Neon: the progress schema is owned by the ``-C`` user (``CURRENT_USER``)
rather than a hard-coded ``cloud_admin``; the session is the catalog's hardened one
(``catalog.db``), named ``compute_ctl``. Failpoint ``compute-migration=return(N)`` fails
the id update of migration N, as in Neon's testing builds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import logging
import re

import psycopg
from psycopg import sql

from compute_ctl.compute import failpoints as failpoints_mod
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute.catalog import db

__all__ = ["FAILPOINT", "Migration", "Outcome", "migrations", "run"]

logger = logging.getLogger(__name__)

FAILPOINT = "compute-migration"
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_PREPARE: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS neon_migration",
    "CREATE TABLE IF NOT EXISTS neon_migration.migration_id ("
    " key pg_catalog.int4 NOT NULL PRIMARY KEY,"
    " id pg_catalog.int8 NOT NULL DEFAULT 0)",
    "INSERT INTO neon_migration.migration_id VALUES (0, 0) ON CONFLICT DO NOTHING",
    "ALTER SCHEMA neon_migration OWNER TO CURRENT_USER",
    "REVOKE ALL ON SCHEMA neon_migration FROM PUBLIC",
)


@dataclasses.dataclass(frozen=True)
class Migration:
    id: int
    name: str
    template: str

    @property
    def skipped(self) -> bool:
        return self.template.startswith("-- SKIP")

    def statement(self, privileged_role: str) -> sql.Composed:
        return sql.SQL(self.template).format(
            privileged_role_name=sql.Identifier(privileged_role),
            privileged_role_literal=sql.Literal(privileged_role),
        )


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The packaged migrations, in order; their numbers are 1..N without gaps."""
    found = []
    for entry in importlib.resources.files(__name__.rpartition(".")[0]).iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.id)
    if [m.id for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files are not numbered 1..N: {[m.name for m in found]}")
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Where the cluster is after a run: ``applied`` migrations of ``latest``."""

    applied: int
    latest: int
    failed_id: int | None = None
    error: str | None = None


async def _current_id(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    cur = await conn.execute("SELECT id FROM neon_migration.migration_id")
    rows = await cur.fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"neon_migration.migration_id has {len(rows)} rows, expected 1")
    value = rows[0][0]
    assert isinstance(value, int)
    return value


async def _apply_one(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    migration: Migration,
    *,
    privileged_role: str,
    failpoints: failpoints_mod.Failpoints | None,
) -> None:
    async with conn.transaction():
        if migration.skipped:
            logger.info("Skipping migration id=%d", migration.id)
        else:
            logger.info("Running migration id=%d (%s)", migration.id, migration.name)
            await conn.execute(migration.statement(privileged_role))
        if failpoints is not None and failpoints.get(FAILPOINT) == f"return({migration.id})":
            raise failpoints_mod.FailpointError(f"failpoint {FAILPOINT} at id={migration.id}")
        await conn.execute(
            "UPDATE neon_migration.migration_id SET id = %s::pg_catalog.int8", (migration.id,)
        )


async def run(
    *,
    connstr: str,
    privileged_role: str,
    metrics: metrics_mod.Metrics,
    failpoints: failpoints_mod.Failpoints | None = None,
) -> Outcome:
    """Apply the pending migrations; a failed one is counted and reported, not raised.

    Raises only when the progress table cannot be prepared (or the connection fails), as
    Neon does; those do not count as a failed migration.
    """
    todo = migrations()
    async with db.connect(connstr) as conn:
        for statement in _PREPARE:
            await conn.execute(statement)
        current = await _current_id(conn)
        for migration in todo[current:]:
            try:
                await _apply_one(
                    conn, migration, privileged_role=privileged_role, failpoints=failpoints
                )
            except (psycopg.Error, failpoints_mod.FailpointError) as e:
                logger.error("Failed to run migration id=%d: %s", migration.id, e)
                metrics.migration_failed(migration.id)
                return Outcome(
                    applied=migration.id - 1,
                    latest=len(todo),
                    failed_id=migration.id,
                    error=str(e),
                )
    logger.info("migrations done: %d applied (cluster at id %d)", len(todo[current:]), current)
    return Outcome(applied=max(current, len(todo)), latest=len(todo))
