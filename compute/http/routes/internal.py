"""Internal-port endpoints the neon extension and local_proxy call: ``POST /grants`` and
``POST /extensions`` (Neon's ``SetRoleGrantsRequest`` / ``ExtensionInstallRequest``).

Both need status ``running`` (412), answer 201 echoing what was done, and compose every
identifier, literal and keyword through ``psycopg.sql`` (privileges come from a closed
list, so they are safe as ``sql.SQL``). They grant or install only what is missing, so
repeating a request is a no-op. Served on the loopback port only, never the external one.
Beyond Neon, a database, schema or role that does not exist is 404 and a value
PostgreSQL rejects is 400 (Neon answers 500 for both).
"""

from __future__ import annotations

import enum
import logging
from typing import Annotated, TypeVar

import psycopg
import pydantic
from aiohttp import web
from psycopg import sql

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import pgconn, responses

__all__ = ["ExtensionRequest", "GrantsRequest", "Privilege", "routes"]

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


class Privilege(enum.StrEnum):
    """Neon's ``compute_api::privilege::Privilege``."""

    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"
    REFERENCES = "REFERENCES"
    TRIGGER = "TRIGGER"
    USAGE = "USAGE"
    CREATE = "CREATE"
    CONNECT = "CONNECT"
    TEMPORARY = "TEMPORARY"
    EXECUTE = "EXECUTE"


# PostgreSQL identifiers: at most NAMEDATALEN - 1 bytes, never NUL.
Ident = Annotated[
    str,
    pydantic.Strict(),
    pydantic.StringConstraints(min_length=1, max_length=63, pattern=r"^[^\x00]+$"),
]
Version = Annotated[
    str,
    pydantic.Strict(),
    pydantic.StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]+$"),
]


class _Request(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)


class GrantsRequest(_Request):
    database: Ident
    schema_name: Ident = pydantic.Field(alias="schema")
    privileges: list[Privilege]
    role: Ident


class ExtensionRequest(_Request):
    extension: Ident
    database: Ident
    version: Version


_M = TypeVar("_M", bound=_Request)


def _parse(model: type[_M], body: object) -> _M:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as e:
        raise responses.ApiError(400, spec_mod.format_validation_error(e)) from None


_GRANTED_SQL = """
SELECT a.privilege_type
FROM pg_catalog.pg_namespace n
JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a ON true
JOIN pg_catalog.pg_roles r ON a.grantee OPERATOR(pg_catalog.=) r.oid
WHERE r.rolname OPERATOR(pg_catalog.=) %s AND n.nspname OPERATOR(pg_catalog.=) %s
"""
_EXTVERSION_SQL = (
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) %s"
)


@routes.post("/grants")
async def grants(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    req = _parse(GrantsRequest, await responses.read_json(request))
    responses.require_running(node.state)
    await pgconn.require_database(node, req.database)
    try:
        async with pgconn.connect(node, req.database) as conn:
            rows = await (await conn.execute(_GRANTED_SQL, (req.role, req.schema_name))).fetchall()
            granted = {row[0] for row in rows}
            missing = [p for p in dict.fromkeys(req.privileges) if p.value not in granted]
            if missing:
                query = sql.SQL("GRANT {privileges} ON SCHEMA {schema} TO {role}").format(
                    privileges=sql.SQL(", ").join(sql.SQL(p.value) for p in missing),
                    schema=sql.Identifier(req.schema_name),
                    role=sql.Identifier(req.role),
                )
                await conn.execute(query)
                logger.info(
                    "granted %s on schema %r to %r in %r",
                    ", ".join(missing),
                    req.schema_name,
                    req.role,
                    req.database,
                )
    except psycopg.Error as e:
        raise pgconn.api_error(e, doing="failed to grant role privileges to the schema") from None
    return responses.json_response(
        {
            "database": req.database,
            "schema": req.schema_name,
            "role": req.role,
            "privileges": [p.value for p in req.privileges],
        },
        status=201,
    )


@routes.post("/extensions")
async def extensions(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    req = _parse(ExtensionRequest, await responses.read_json(request))
    responses.require_running(node.state)
    await pgconn.require_database(node, req.database)
    try:
        async with pgconn.connect(node, req.database) as conn:
            row = await (await conn.execute(_EXTVERSION_SQL, (req.extension,))).fetchone()
            if row is None:
                query = sql.SQL(
                    "CREATE EXTENSION IF NOT EXISTS {ext} WITH SCHEMA public VERSION {version}"
                )
            elif row[0] != req.version:
                query = sql.SQL("ALTER EXTENSION {ext} UPDATE TO {version}")
            else:
                query = None
            if query is not None:
                await conn.execute(
                    query.format(
                        ext=sql.Identifier(req.extension), version=sql.Literal(req.version)
                    )
                )
                logger.info(
                    "extension %r is now at version %r in %r",
                    req.extension,
                    req.version,
                    req.database,
                )
    except psycopg.Error as e:
        raise pgconn.api_error(e, doing="failed to install extension") from None
    return responses.json_response({"extension": req.extension, "version": req.version}, status=201)
