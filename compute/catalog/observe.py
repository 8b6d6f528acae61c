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

from compute_ctl.compute import errors
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

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


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


async def _rows(
    conn: Connection, query: str | plan_mod.Statement, **params: object
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params or None)
    return await cur.fetchall()


async def _visit(connstr: str, dbname: str) -> tuple[str, str, bool]:
    async with db.connect(connstr, dbname=dbname) as conn:
        rows = await _rows(conn, _LOCAL, web_access=perdb.WEB_ACCESS)
    return dbname, str(rows[0][0]), bool(rows[0][1])


def _neon_extension(row: tuple[Any, ...]) -> model.ExtensionInfo | None:
    default_version, installed_version, schema = row
    if default_version is None:
        return None
    return model.ExtensionInfo(
        name=system.NEON_EXTENSION,
        default_version=default_version,
        installed_version=installed_version,
        schema=schema,
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
    server = (
        await _rows(
            conn,
            _SERVER,
            neon_schema=system.NEON_SCHEMA,
            neon_extension=system.NEON_EXTENSION,
            health_check=health_check.QUALIFIED_NAME,
            marker=subscriptions.MARKER_QUALIFIED_NAME,
        )
    )[0]
    roles = {
        row[1]: model.RoleInfo(
            name=row[1],
            oid=row[0],
            superuser=row[2],
            inherit=row[3],
            createrole=row[4],
            createdb=row[5],
            login=row[6],
            replication=row[7],
            bypassrls=row[8],
            connlimit=row[9],
            valid_until=_valid_until(row[10]),
            password=row[11],
        )
        for row in await _rows(conn, _ROLES)
    }
    databases = {
        row[1]: model.DatabaseInfo(
            name=row[1],
            oid=row[0],
            owner=row[2],
            connlimit=row[3],
            allow_connections=row[4],
            is_template=row[5],
            privileged_grant=bool(row[6]),
            default_privileges=bool(row[7]),
            subscriptions=tuple(row[8]),
            web_access_create=bool(row[9]),
        )
        for row in await _rows(
            conn, _DATABASES, privileged_role=privileged_role, web_access=perdb.WEB_ACCESS
        )
    }
    references = {row[0]: frozenset(row[1]) for row in await _rows(conn, _REFERENCES)}
    dropped: frozenset[str] = frozenset()
    if server[7]:
        dropped = frozenset(row[0] for row in await _rows(conn, subscriptions.marker_query()))
    # The GRANT to web_access only matters from 15 on (see perdb).
    web_access = server[2] >= 150000 and perdb.WEB_ACCESS in roles
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
        superuser=server[0],
        server_version=server[2],
        maintenance_db=server[1],
        roles=roles,
        databases=databases,
        references=references,
        preloaded=_preloaded(server[3]),
        extensions=frozenset(server[4]),
        neon_schema=server[5],
        health_check=server[6],
        subscriptions_dropped=dropped,
        neon_extension=_neon_extension(server[8:11]),
    )
