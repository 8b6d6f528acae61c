"""How HTTP handlers reach the local PostgreSQL: one short-lived superuser connection.

Owns the connection policy of the API's own SQL (hardened against hostile per-database
settings the way Neon's ``spec_apply`` connections are: empty ``search_path``, no
``default_transaction_read_only``, no ``statement_timeout`` inherited from
``ALTER DATABASE``), and the translation of PostgreSQL errors into HTTP codes: an object
that does not exist is 404, a value PostgreSQL rejects is 400, anything else 500.
Handlers must not open connections any other way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import conninfo as conninfo_mod

from compute_ctl.compute.http import interface, responses

__all__ = ["Connection", "api_error", "connect", "libpq_params", "require_database"]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

_HARDENING = (
    "-c default_transaction_read_only=off -c search_path= -c statement_timeout=0 "
    "-c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
)
APPLICATION_NAME = "compute_ctl:http"

# SQLSTATEs of "no such object": 3D000 database, 3F000 schema, 42704 role/object,
# 42P01 table, 42883 function. Class 22 (data exceptions) and 0A (not supported) are
# values the client chose; 58P01 is a missing extension control file.
_NOT_FOUND = frozenset({"3D000", "3F000", "42704", "42P01", "42883", "58P01"})
_BAD_REQUEST_CLASSES = ("22", "0A", "0L", "42")


def libpq_params(node: interface.Node, dbname: str = "postgres") -> dict[str, Any]:
    """The node's superuser conninfo for ``dbname`` with our hardening options prepended."""
    params = conninfo_mod.conninfo_to_dict(node.connstr(dbname))
    params["dbname"] = dbname
    existing = params.get("options")
    params["options"] = f"{_HARDENING} {existing}" if existing else _HARDENING
    params.setdefault("application_name", APPLICATION_NAME)
    return params


@contextlib.asynccontextmanager
async def connect(
    node: interface.Node,
    dbname: str = "postgres",
    *,
    timeout: float = 10.0,
) -> AsyncIterator[Connection]:
    """An autocommit superuser connection to ``dbname``, closed on exit."""
    params = libpq_params(node, dbname)
    params["connect_timeout"] = max(1, int(timeout))
    conn = await asyncio.wait_for(
        psycopg.AsyncConnection.connect(conninfo_mod.make_conninfo("", **params), autocommit=True),
        timeout,
    )
    try:
        yield conn
    finally:
        await conn.close()


def api_error(e: psycopg.Error, *, doing: str) -> responses.ApiError:
    """Translate a PostgreSQL error; the message names what failed, never a secret."""
    sqlstate = e.sqlstate or ""
    detail = e.diag.message_primary if e.diag.message_primary else type(e).__name__
    if sqlstate in _NOT_FOUND:
        return responses.ApiError(404, f"{doing}: {detail}")
    if sqlstate.startswith(_BAD_REQUEST_CLASSES):
        return responses.ApiError(400, f"{doing}: {detail}")
    return responses.ApiError(500, f"{doing}: {detail}")


_DATABASE_EXISTS_SQL = (
    "SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s"
)


async def require_database(node: interface.Node, dbname: str) -> None:
    """404 unless ``dbname`` exists (looked up from ``postgres``, never by connecting to it)."""
    try:
        async with connect(node) as conn:
            row = await (await conn.execute(_DATABASE_EXISTS_SQL, (dbname,))).fetchone()
    except psycopg.Error as e:
        raise api_error(e, doing="could not look up the database") from None
    if row is None:
        raise responses.ApiError(404, f"database {dbname!r} does not exist")
