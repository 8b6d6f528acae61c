"""Read-mostly catalog endpoints: ``/dbs_and_roles``, ``/database_schema``, ``/insights``,
``/check_writability`` (Neon's shapes and codes).

Thin: the SQL lives in ``catalog.ondemand`` and the pg_dump process in
``catalog.schema_dump`` (bounded slots, a lock-wait timeout, killed when the client goes
away); errors are translated by ``translate``. The only write is ``/check_writability``'s
upsert of the ``public.health_check`` row.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from compute_ctl.compute.catalog import ondemand, schema_dump
from compute_ctl.compute.http import responses

__all__ = ["routes"]

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/dbs_and_roles")
async def dbs_and_roles(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    found = await ondemand.databases_and_roles(node.connstr())
    return responses.json_response({"roles": found.roles, "databases": found.databases})


def _dumps(request: web.Request) -> schema_dump.SchemaDumps:
    node = request.app[responses.NODE]
    return responses.node_scoped(node, schema_dump.SchemaDumps, schema_dump.SchemaDumps)


@routes.get("/database_schema")
async def database_schema(request: web.Request) -> web.StreamResponse:
    node = request.app[responses.NODE]
    dbname = request.query.get("database")
    if not dbname:
        raise responses.ApiError(400, "query parameter 'database' is required")
    if "\x00" in dbname:
        raise responses.ApiError(400, "query parameter 'database' must not contain NUL")
    async with _dumps(request).dump(
        connstr=node.connstr(),
        tools=node.tools,
        dbname=dbname,
        gone=lambda: request.transport is None or request.transport.is_closing(),
    ) as dump:
        chunk = await dump.read()  # a dump that fails before any output is an error answer
        # Neon's content type, although the body is pg_dump's SQL text, not JSON: clients
        # written against Neon may check it.
        response = responses.stream_response(content_type="application/json")
        await response.prepare(request)
        try:
            while chunk:
                await response.write(chunk)
                chunk = await dump.read()
            await response.write_eof()
        except (ConnectionError, OSError) as e:
            # Headers are sent: nothing to answer any more; leaving the context kills it.
            logger.info("schema dump of %r aborted: %s", dbname, e)
        return response


@routes.get("/insights")
async def insights(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    responses.require_running(node.state)
    statements = await ondemand.insights(node.connstr())
    inner = json.dumps({"pg_stat_statements": statements}, separators=(",", ":"))
    # Neon's body is a JSON string whose content is the JSON document.
    return web.Response(text=json.dumps(inner), content_type="application/json")


@routes.post("/check_writability")
async def check_writability(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    responses.require_running(node.state)
    await ondemand.check_writability(node.connstr())
    return responses.json_response(True)
