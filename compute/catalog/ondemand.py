"""Catalog requests served at run time, outside the spec (the HTTP API's SQL).

Owns the rules of Neon's on-demand endpoints, so the routes stay thin:

- ``grant_schema_privileges`` (``POST /grants``): grants only the privileges the role
  lacks (read from the schema's ACL with ``aclexplode``), so a repeat is a no-op. Unlike
  Neon, it refuses the system schemas (``pg_catalog``, ``information_schema``, ``pg_*``)
  and compute_ctl's own (``neon``, ``neon_migration``): granting ``CREATE`` there lets a
  role plant objects every session resolves.
- ``install_extension`` (``POST /extensions``): same version, nothing; another version,
  ``ALTER EXTENSION ... UPDATE TO``; absent, ``CREATE EXTENSION ... WITH SCHEMA public``.
- ``databases_and_roles`` (``GET /dbs_and_roles``) and ``insights`` (``GET /insights``,
  with passwords from users' own ``CREATE ROLE ... PASSWORD`` statements redacted).
- ``check_writability`` (``POST /check_writability``): upserts ``public.health_check``.

Every session is ``pgsession``'s. PostgreSQL errors propagate unchanged (the HTTP layer
translates them); a database, schema or role that does not exist raises
``errors.NotFound`` and a refused request ``errors.InputError``. SQL is composed with
``psycopg.sql`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import rows, sql

from compute_ctl.compute import api_models, errors, pgsession
from compute_ctl.compute.catalog import health_check

__all__ = [
    "PROTECTED_SCHEMAS",
    "check_writability",
    "databases_and_roles",
    "grant_schema_privileges",
    "insights",
    "install_extension",
    "redact_passwords",
    "require_database",
]

logger = logging.getLogger(__name__)

APPLICATION_NAME = "compute_ctl:http"
PROTECTED_SCHEMAS = frozenset({"information_schema", "neon", "neon_migration"})
"""Schemas ``/grants`` refuses, besides every ``pg_*`` schema."""


def _session(
    connstr: str, dbname: str = "postgres"
) -> contextlib.AbstractAsyncContextManager[pgsession.Connection]:
    return pgsession.connect(connstr, application_name=APPLICATION_NAME, dbname=dbname)


_DATABASE_EXISTS_SQL = (
    "SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s"
)


async def require_database(connstr: str, dbname: str) -> None:
    """``NotFound`` unless ``dbname`` exists (looked up from ``postgres``, never by
    connecting to it)."""
    async with _session(connstr) as conn:
        row = await (await conn.execute(_DATABASE_EXISTS_SQL, (dbname,))).fetchone()
    if row is None:
        raise errors.NotFound(f"database {dbname!r} does not exist")


# --- /grants ------------------------------------------------------------------------

_SCHEMA_EXISTS_SQL = "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) %s"
_GRANTED_SQL = """
SELECT a.privilege_type
FROM pg_catalog.pg_namespace n
JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a ON true
JOIN pg_catalog.pg_roles r ON a.grantee OPERATOR(pg_catalog.=) r.oid
WHERE r.rolname OPERATOR(pg_catalog.=) %s AND n.nspname OPERATOR(pg_catalog.=) %s
"""


def check_grantable_schema(schema: str) -> None:
    """``InputError`` for a system schema or one of compute_ctl's own."""
    if schema.startswith("pg_") or schema in PROTECTED_SCHEMAS:
        raise errors.InputError(
            f"schema {schema!r} is reserved: privileges on it cannot be granted"
        )


async def grant_schema_privileges(
    connstr: str,
    *,
    database: str,
    schema: str,
    role: str,
    privileges: Sequence[api_models.Privilege],
) -> list[api_models.Privilege]:
    """Grant what ``role`` lacks of ``privileges`` on ``schema``; the privileges granted."""
    check_grantable_schema(schema)
    await require_database(connstr, database)
    async with _session(connstr, database) as conn:
        if await (await conn.execute(_SCHEMA_EXISTS_SQL, (schema,))).fetchone() is None:
            raise errors.NotFound(f"schema {schema!r} does not exist in database {database!r}")
        rows_ = await (await conn.execute(_GRANTED_SQL, (role, schema))).fetchall()
        granted = {row[0] for row in rows_}
        missing = [p for p in dict.fromkeys(privileges) if p.value not in granted]
        if missing:
            query = sql.SQL("GRANT {privileges} ON SCHEMA {schema} TO {role}").format(
                privileges=sql.SQL(", ").join(sql.SQL(p.value) for p in missing),
                schema=sql.Identifier(schema),
                role=sql.Identifier(role),
            )
            await conn.execute(query)
            logger.info(
                "granted %s on schema %r to %r in %r",
                ", ".join(missing),
                schema,
                role,
                database,
            )
    return missing


# --- /extensions --------------------------------------------------------------------

_EXTVERSION_SQL = (
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) %s"
)


async def install_extension(connstr: str, *, database: str, extension: str, version: str) -> None:
    """Bring ``extension`` to ``version`` in ``database`` (idempotent)."""
    await require_database(connstr, database)
    async with _session(connstr, database) as conn:
        row = await (await conn.execute(_EXTVERSION_SQL, (extension,))).fetchone()
        if row is None:
            query = sql.SQL(
                "CREATE EXTENSION IF NOT EXISTS {ext} WITH SCHEMA public VERSION {version}"
            )
        elif row[0] != version:
            query = sql.SQL("ALTER EXTENSION {ext} UPDATE TO {version}")
        else:
            return
        await conn.execute(
            query.format(ext=sql.Identifier(extension), version=sql.Literal(version))
        )
    logger.info("extension %r is now at version %r in %r", extension, version, database)


# --- /dbs_and_roles -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CatalogObjects:
    roles: list[dict[str, Any]]
    databases: list[dict[str, Any]]


_ROLES_SQL = """
SELECT rolname AS name, rolpassword AS encrypted_password
FROM pg_catalog.pg_authid ORDER BY rolname
"""
# A subquery rather than datdba::regrole, which would quote unusual names.
_DATABASES_SQL = """
SELECT d.datname AS name,
       (SELECT r.rolname FROM pg_catalog.pg_roles r
        WHERE r.oid OPERATOR(pg_catalog.=) d.datdba) AS owner,
       NOT d.datallowconn AS restrict_conn,
       d.datconnlimit OPERATOR(pg_catalog.=) -2 AS invalid
FROM pg_catalog.pg_database d
ORDER BY d.datname
"""


async def databases_and_roles(connstr: str) -> CatalogObjects:
    """Every role (with its password verifier, as Neon answers) and database."""
    async with _session(connstr) as conn:
        cur = conn.cursor(row_factory=rows.dict_row)
        roles = await (await cur.execute(_ROLES_SQL)).fetchall()
        databases = await (await cur.execute(_DATABASES_SQL)).fetchall()
    return CatalogObjects(
        roles=[{**r, "options": None} for r in roles],
        databases=[
            {
                "name": d["name"],
                "owner": d["owner"],
                "options": None,
                "restrict_conn": d["restrict_conn"],
                "invalid": d["invalid"],
            }
            for d in databases
        ],
    )


# --- /insights ----------------------------------------------------------------------

# Top 100 statements by mean execution + planning time, not the superuser's own.
_INSIGHTS_SQL = """
SELECT pg_catalog.row_to_json(s)::text
FROM public.pg_stat_statements s
WHERE s.userid OPERATOR(pg_catalog.<>) (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user)
ORDER BY (s.mean_exec_time + s.mean_plan_time) DESC
LIMIT 100
"""
REDACTED = "'<redacted>'"
_PASSWORD = re.compile(r"\bPASSWORD\b\s*", re.IGNORECASE)
# A string constant: '...' (with '' and, in E'...', backslash escapes), or $tag$...$tag$.
_LITERAL = re.compile(
    r"[Ee]'(?:[^'\\]|''|\\.)*'|'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z0-9_]*)?\$.*?\$\1\$|NULL\b",
    re.DOTALL | re.IGNORECASE,
)


def redact_passwords(query: str) -> str:
    """``query`` with the literal after every ``PASSWORD`` keyword replaced.

    utility statements are not normalised by pg_stat_statements, so ``CREATE ROLE r
    PASSWORD 'secret'`` keeps its text. ``PASSWORD NULL`` is kept; anything after the
    keyword that is not a complete literal is cut off entirely.
    """
    out: list[str] = []
    pos = 0
    for match in _PASSWORD.finditer(query):
        if match.start() < pos:
            continue  # inside a literal already redacted
        out.append(query[pos : match.end()])
        literal = _LITERAL.match(query, match.end())
        if literal is None:
            out.append(REDACTED)
            return "".join(out)
        text = literal.group(0)
        out.append(text if text.upper() == "NULL" else REDACTED)
        pos = literal.end()
    out.append(query[pos:])
    return "".join(out)


async def insights(connstr: str) -> list[dict[str, Any]]:
    """pg_stat_statements' top statements; empty when the extension is unavailable."""
    try:
        async with _session(connstr) as conn:
            found = await (await conn.execute(_INSIGHTS_SQL)).fetchall()
    except (pg_errors.UndefinedTable, pg_errors.ObjectNotInPrerequisiteState) as e:
        # Not created or not preloaded: Neon answers an empty list.
        logger.info("insights: pg_stat_statements unavailable: %s", e.diag.message_primary)
        return []
    statements: list[dict[str, Any]] = []
    for (text,) in found:
        row = json.loads(text)
        if isinstance(row.get("query"), str):
            row["query"] = redact_passwords(row["query"])
        statements.append(row)
    return statements


# --- /check_writability -------------------------------------------------------------

_DISK_FULL = "53100"


async def check_writability(connstr: str) -> None:
    """Upsert row 1 of ``public.health_check``; raise if the compute cannot write."""
    try:
        async with _session(connstr) as conn:
            try:
                await conn.execute(health_check.UPSERT_ROW)
            except pg_errors.UndefinedTable:
                # The apply creates it; this covers a table dropped since.
                await conn.execute(health_check.CREATE_TABLE)
                await conn.execute(health_check.UPSERT_ROW)
    except psycopg.Error as e:
        if e.sqlstate != _DISK_FULL:
            detail = e.diag.message_primary or type(e).__name__
            raise errors.ComputeError(f"compute is not writable: {detail}") from e
        # Neon: a full disk still proves the timeline accepts writes up to its quota.
        logger.warning("check_writability: disk full, reporting writable")
