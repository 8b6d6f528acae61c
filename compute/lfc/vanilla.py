"""The vanilla backend (beyond Neon): the blocks in ``shared_buffers``, saved and reloaded.

Saving reads ``pg_buffercache`` in the maintenance database: every valid buffer's
database, tablespace, relfilenode, fork and block (template databases left out: an
extension created there would be copied into every new database). Restoring connects
to each database of the list, maps each (tablespace, relfilenode) back to a relation
with ``pg_filenode_relation`` and loads the blocks with ``pg_prewarm(..., 'buffer',
fork, first, last)``, one call per run of consecutive blocks. Relfilenodes survive a restart
and a physical copy (``pg_basebackup``, a standby), so the list fits the same PGDATA, a
copy of it, or a replica of it; a relation rewritten since (``VACUUM FULL``, ``TRUNCATE``)
or dropped has a new or no relfilenode, and its blocks count as skipped, as do blocks
past a relation's current end.

The state is JSON (zstd-compressed by the controller): ``{"format", "version",
"block_size", "databases": [{"name", "relations": [[tablespace, relfilenode, fork,
[[first, last], ...]], ...]}]}``; ``name`` is null for the shared catalogs, which are
loaded through the maintenance database.

The two contrib extensions are created when missing (``pg_buffercache`` in the
maintenance database, ``pg_prewarm`` in each database restored into), ``WITH SCHEMA
public`` as the catalog apply does for ``pg_stat_statements``; an existing one is used in
its own schema. A standby cannot create them: there they must come from the primary, and
a database without ``pg_prewarm`` is skipped.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from psycopg import sql

from compute_ctl.compute import pgsession
from compute_ctl.compute.lfc import backends

__all__ = ["FORMAT", "VanillaBackend", "is_buffer_list"]

logger = logging.getLogger(__name__)

FORMAT = "compute_ctl/pg_buffercache"
VERSION = 1
FORKS = ("main", "fsm", "vm", "init")  # relforknumber 0..3

_SAVE = """
SELECT CASE WHEN b.reldatabase = 0 THEN NULL ELSE d.datname END,
       b.reltablespace, b.relfilenode, b.relforknumber, b.relblocknumber
  FROM {view} AS b
  LEFT JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) b.reldatabase
 WHERE b.relfilenode IS NOT NULL
   AND (b.reldatabase = 0 OR (d.datallowconn AND NOT d.datistemplate))
 ORDER BY 1 NULLS FIRST, 2, 3, 4, 5
"""
# Each (tablespace, relfilenode, fork) of the list: its relation now, and its size in blocks.
_RESOLVE = """
SELECT t.i, r.oid, pg_catalog.pg_relation_size(r.oid, t.fork) / %(block_size)s
  FROM ROWS FROM (pg_catalog.unnest(%(tbs)s::oid[]), pg_catalog.unnest(%(node)s::oid[]),
                 pg_catalog.unnest(%(fork)s::text[]))
       WITH ORDINALITY AS t(tbs, node, fork, i)
  LEFT JOIN LATERAL (SELECT pg_catalog.pg_filenode_relation(t.tbs, t.node)::oid AS oid) AS r
       ON true
"""
_PREWARM = """
SELECT pg_catalog.sum({fn}(r.rel, 'buffer', r.fork, r.first, r.last))
  FROM ROWS FROM (pg_catalog.unnest(%(rel)s::oid[]), pg_catalog.unnest(%(fork)s::text[]),
                 pg_catalog.unnest(%(first)s::int8[]), pg_catalog.unnest(%(last)s::int8[]))
       AS r(rel, fork, first, last)
"""
_EXTENSION_SCHEMA = """
SELECT n.nspname FROM pg_catalog.pg_extension AS e
  JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
 WHERE e.extname OPERATOR(pg_catalog.=) %s
"""

Relation = tuple[int, int, int]  # tablespace, relfilenode, fork number
Run = tuple[int, int]  # first and last block, inclusive


def is_buffer_list(state: bytes) -> bool:
    """Whether ``state`` is this backend's (the format tag opens the document)."""
    return state.startswith(b'{"format":"' + FORMAT.encode() + b'"')


def _runs(blocks: list[int]) -> list[Run]:
    runs: list[Run] = []
    for block in blocks:
        if runs and block == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], block)
        elif not runs or block > runs[-1][1]:
            runs.append((block, block))
    return runs


async def _extension_schema(conn: pgsession.Connection, name: str, *, where: str) -> str | None:
    """The schema of extension ``name``, created first if missing and possible; ``None``
    on a standby that lacks it."""
    cur = await conn.execute(_EXTENSION_SCHEMA, [name])
    row = await cur.fetchone()
    if row is not None:
        return str(row[0])
    cur = await conn.execute("SELECT pg_catalog.pg_is_in_recovery()")
    recovery = await cur.fetchone()
    if recovery is not None and recovery[0]:
        logger.warning("%s: extension %s is missing and a standby cannot create it", where, name)
        return None
    logger.info("%s: creating extension %s", where, name)
    await conn.execute(
        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA public").format(sql.Identifier(name))
    )
    return "public"


class VanillaBackend:
    name = "vanilla"

    def __init__(self, *, connect: backends.Connect) -> None:
        self._connect = connect

    # --- save -------------------------------------------------------------------

    async def save(self, conn: pgsession.Connection) -> bytes | None:
        schema = await _extension_schema(conn, "pg_buffercache", where="maintenance database")
        if schema is None:
            raise backends.StateError(
                "pg_buffercache is not installed and this standby cannot create it: "
                "create the extension on the primary"
            )
        view = sql.SQL("{}.pg_buffercache").format(sql.Identifier(schema))
        cur = await conn.execute(sql.SQL(_SAVE).format(view=view))
        rows = await cur.fetchall()
        if not rows:
            return None
        cur = await conn.execute("SELECT pg_catalog.current_setting('block_size')::int")
        size = await cur.fetchone()
        databases: dict[str | None, dict[Relation, list[int]]] = {}
        for datname, tbs, node, fork, block in rows:
            relations = databases.setdefault(datname, {})
            relations.setdefault((int(tbs), int(node), int(fork)), []).append(int(block))
        document = {
            "format": FORMAT,
            "version": VERSION,
            "block_size": int(size[0]) if size else 8192,
            "databases": [
                {
                    "name": name,
                    "relations": [
                        [tbs, node, fork, [list(run) for run in _runs(blocks)]]
                        for (tbs, node, fork), blocks in relations.items()
                    ],
                }
                for name, relations in databases.items()
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    # --- restore ----------------------------------------------------------------

    async def restore(self, conn: pgsession.Connection, state: bytes) -> backends.Counts:
        document = _parse(state)
        block_size = int(document["block_size"])
        total = prewarmed = 0
        for database in document["databases"]:
            name = database["name"]
            relations = [
                ((int(t), int(n), int(f)), [(int(a), int(b)) for a, b in runs])
                for t, n, f, runs in database["relations"]
            ]
            count = sum(b - a + 1 for _, runs in relations for a, b in runs)
            total += count
            if name is None:
                prewarmed += await self._restore_in(conn, relations, block_size, where="shared")
                continue
            try:
                async with self._connect(str(name)) as db:
                    prewarmed += await self._restore_in(
                        db, relations, block_size, where=f"database {name!r}"
                    )
            except psycopg.OperationalError as e:  # dropped since, or not accepting connections
                logger.warning("prewarm: database %r skipped: %s", name, e)
        return backends.Counts(total=total, prewarmed=prewarmed, skipped=total - prewarmed)

    async def _restore_in(
        self,
        conn: pgsession.Connection,
        relations: list[tuple[Relation, list[Run]]],
        block_size: int,
        *,
        where: str,
    ) -> int:
        """Blocks loaded in the database of ``conn``."""
        schema = await _extension_schema(conn, "pg_prewarm", where=where)
        if schema is None:
            return 0
        fn = sql.SQL("{}.pg_prewarm").format(sql.Identifier(schema))
        cur = await conn.execute(
            _RESOLVE,
            {
                "block_size": block_size,
                "tbs": [r[0] for r, _ in relations],
                "node": [r[1] for r, _ in relations],
                "fork": [_fork(r[2]) for r, _ in relations],
            },
        )
        found = {int(i): (oid, nblocks) for i, oid, nblocks in await cur.fetchall()}
        calls: list[tuple[int, str, int, int]] = []
        for i, ((_, _, fork), runs) in enumerate(relations, start=1):
            oid, nblocks = found.get(i, (None, None))
            if oid is None or not nblocks:
                continue
            for first, last in runs:
                if first < nblocks:
                    calls.append((int(oid), _fork(fork), first, min(last, int(nblocks) - 1)))
        if not calls:
            return 0
        try:
            return await _prewarm(conn, fn, calls)
        except psycopg.Error as e:
            # A relation dropped between the lookup and the load fails the whole batch:
            # load relation by relation, so only its blocks are lost.
            logger.info("prewarm in %s: batch failed (%s), loading per relation", where, e)
        loaded = 0
        for rel in sorted({c[0] for c in calls}):
            try:
                loaded += await _prewarm(conn, fn, [c for c in calls if c[0] == rel])
            except psycopg.Error as e:
                logger.info("prewarm in %s: relation %d skipped: %s", where, rel, e)
        return loaded


def _fork(number: int) -> str:
    if not 0 <= number < len(FORKS):
        raise backends.StateError(f"unknown fork number {number} in the saved state")
    return FORKS[number]


async def _prewarm(
    conn: pgsession.Connection, fn: sql.Composable, calls: list[tuple[int, str, int, int]]
) -> int:
    cur = await conn.execute(
        sql.SQL(_PREWARM).format(fn=fn),
        {
            "rel": [c[0] for c in calls],
            "fork": [c[1] for c in calls],
            "first": [c[2] for c in calls],
            "last": [c[3] for c in calls],
        },
    )
    row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


def _parse(state: bytes) -> dict[str, Any]:
    if not is_buffer_list(state):
        raise backends.StateError(
            "the saved state is not a buffer list (saved by a compute with the neon extension?)"
        )
    try:
        document = json.loads(state)
        if document.get("version") != VERSION:
            raise backends.StateError(f"buffer list version {document.get('version')!r}")
        for database in document["databases"]:
            for relation in database["relations"]:
                _check(relation)
    except (ValueError, KeyError, TypeError) as e:
        raise backends.StateError(f"the saved buffer list is damaged: {e}") from e
    result: dict[str, Any] = document
    return result


def _check(relation: Any) -> None:
    tbs, node, fork, runs = relation
    _fork(int(fork))
    for first, last in runs:
        if not 0 <= int(first) <= int(last):
            raise ValueError(f"bad block run [{first}, {last}] of relfilenode {node} in {tbs}")
