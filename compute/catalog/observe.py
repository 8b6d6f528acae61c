"""Reads the catalog into a ``model.Catalog``: the only reader besides ``settings``.

A snapshot is a handful of queries on the maintenance connection, over shared catalogs
(``pg_authid``, ``pg_database``, ``pg_shdepend``, ``pg_subscription``) and the
maintenance database's own system objects (schema ``neon``, the ``neon`` extension,
``public.health_check``, ``neon.drop_subscriptions_done``), so its cost does not grow
with the number of databases. Only spec databases whose schema work is not done yet
are visited (concurrently, under the cap) to read their schema ``public``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import rows

from compute_ctl.compute import errors, pgsession
from compute_ctl.compute.catalog import (
    db,
    health_check,
    model,
    perdb,
    subscriptions,
    system,
    tasks,
)
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["snapshot"]

logger = logging.getLogger(__name__)

Connection = pgsession.Connection
Row = dict[str, Any]


def _query(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(f"observe_{name}.sql").read_text()


_SERVER = _query("server")
_ROLES = _query("roles")
_DATABASES = _query("databases")
_REFERENCES = _query("references")
_LOCAL = _query("local")


def _preloaded(value: str) -> frozenset[str]:
    return frozenset(part.strip().strip('"') for part in value.split(",") if part.strip())


def _valid_until(text: str | None) -> str | None:
    if text is None:
        return None
    return desired_mod.normalise_valid_until("rolvaliduntil", text)


async def _send(
    conn: Connection, query: str | plan_mod.Statement, **params: object
) -> psycopg.AsyncCursor[Row]:
    """``query`` executed; its rows by column name (every query names its columns)."""
    cur = conn.cursor(row_factory=rows.dict_row)
    await cur.execute(query, params or None)
    return cur


async def _rows(conn: Connection, query: str | plan_mod.Statement, **params: object) -> list[Row]:
    return await (await _send(conn, query, **params)).fetchall()


async def _visit(connstr: str, dbname: str) -> tuple[str, str, bool]:
    async with db.connect(connstr, dbname=dbname) as conn:
        (row,) = await _rows(conn, _LOCAL, web_access=perdb.WEB_ACCESS)
    return dbname, str(row["public_owner"]), bool(row["web_access_create"])


def _neon_extension(server: Row) -> model.ExtensionInfo | None:
    if server["neon_default_version"] is None:
        return None
    return model.ExtensionInfo(
        name=system.NEON_EXTENSION,
        default_version=server["neon_default_version"],
        installed_version=server["neon_installed_version"],
        schema=server["neon_extension_schema"],
    )


async def snapshot(
    conn: Connection,
    *,
    connstr: str,
    privileged_role: str,
    visit: Iterable[str] = (),
    concurrency: int = 4,
) -> model.Catalog:
    """Observe the catalog through ``conn`` (a ``db.connect`` session on the maintenance
    database); ``visit`` names the databases whose local facts may be needed."""
    try:
        return await _snapshot(
            conn,
            connstr=connstr,
            privileged_role=privileged_role,
            visit=visit,
            concurrency=concurrency,
        )
    except psycopg.Error as e:
        state = f" (SQLSTATE {e.sqlstate})" if e.sqlstate else ""
        raise errors.ApplyError(
            f"observe: reading the catalog failed: {e}{state}", phase="observe", obj="the catalog"
        ) from e


async def _snapshot(
    conn: Connection,
    *,
    connstr: str,
    privileged_role: str,
    visit: Iterable[str],
    concurrency: int,
) -> model.Catalog:
    # Four independent reads, one round trip (pipeline mode): sent together, fetched in
    # order; each statement still sees its own snapshot, as in autocommit.
    async with conn.pipeline():
        server_cur = await _send(
            conn,
            _SERVER,
            neon_schema=system.NEON_SCHEMA,
            neon_extension=system.NEON_EXTENSION,
            health_check=health_check.QUALIFIED_NAME,
            marker=subscriptions.MARKER_QUALIFIED_NAME,
        )
        roles_cur = await _send(conn, _ROLES)
        databases_cur = await _send(
            conn, _DATABASES, privileged_role=privileged_role, web_access=perdb.WEB_ACCESS
        )
        references_cur = await _send(conn, _REFERENCES)
        server = (await server_cur.fetchall())[0]
        roles = {
            row["name"]: model.RoleInfo(**{**row, "valid_until": _valid_until(row["valid_until"])})
            for row in await roles_cur.fetchall()
        }
        databases = {
            row["name"]: model.DatabaseInfo(
                **{
                    **row,
                    "privileged_grant": bool(row["privileged_grant"]),
                    "default_privileges": bool(row["default_privileges"]),
                    "subscriptions": tuple(row["subscriptions"]),
                    "web_access_create": bool(row["web_access_create"]),
                }
            )
            for row in await databases_cur.fetchall()
        }
        references = {
            row["role_oid"]: frozenset(row["databases"]) for row in await references_cur.fetchall()
        }
    dropped: frozenset[str] = frozenset()
    if server["marker"]:
        dropped = frozenset(
            row["timeline_id"] for row in await _rows(conn, subscriptions.marker_query())
        )
    # The GRANT to web_access only matters from 15 on (see perdb).
    web_access = server["server_version"] >= 150000 and perdb.WEB_ACCESS in roles
    pending = [
        name
        for name in dict.fromkeys(visit)
        if (info := databases.get(name)) is not None
        and info.connectable
        and (not info.default_privileges or (web_access and not info.web_access_create))
    ]
    if pending:
        logger.debug("visiting %d databases for their schema public", len(pending))
        seen = await tasks.bounded(lambda name: _visit(connstr, name), pending, limit=concurrency)
        for name, owner, web_access_create in seen:
            databases[name] = dataclasses.replace(
                databases[name], public_owner=owner, web_access_create=web_access_create
            )
    return model.Catalog(
        superuser=server["superuser"],
        server_version=server["server_version"],
        maintenance_db=server["dbname"],
        roles=roles,
        databases=databases,
        references=references,
        preloaded=_preloaded(server["preloaded"]),
        extensions=frozenset(server["extensions"]),
        neon_schema=server["neon_schema"],
        health_check=server["health_check"],
        subscriptions_dropped=dropped,
        neon_extension=_neon_extension(server),
    )
