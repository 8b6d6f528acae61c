"""Read-mostly catalog endpoints: ``/dbs_and_roles``, ``/database_schema``, ``/insights``,
``/check_writability`` (Neon's shapes and codes).

Each handler opens its own short connection through ``pgconn`` and never changes the
spec's catalog: the only write is ``/check_writability``'s upsert of the
``public.health_check`` row. ``/database_schema`` streams ``pg_dump --schema-only`` run
as the PostgreSQL OS user through ``node.tools``; the client's disconnect kills it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import psycopg
from aiohttp import web
from psycopg import conninfo as conninfo_mod
from psycopg import errors as pg_errors

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import health_check
from compute_ctl.compute.http import pgconn, responses

__all__ = ["routes"]

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

_ROLES_SQL = "SELECT rolname, rolpassword FROM pg_catalog.pg_authid ORDER BY rolname"
# A subquery rather than datdba::regrole, which would quote unusual names.
_DATABASES_SQL = """
SELECT d.datname,
       (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) d.datdba),
       NOT d.datallowconn,
       d.datconnlimit OPERATOR(pg_catalog.=) -2
FROM pg_catalog.pg_database d
ORDER BY d.datname
"""
# Top 100 statements by mean execution + planning time, not the superuser's own.
_INSIGHTS_SQL = """
SELECT pg_catalog.row_to_json(s)::text
FROM public.pg_stat_statements s
WHERE s.userid OPERATOR(pg_catalog.<>) (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user)
ORDER BY (s.mean_exec_time + s.mean_plan_time) DESC
LIMIT 100
"""
_DISK_FULL = "53100"


@routes.get("/dbs_and_roles")
async def dbs_and_roles(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    try:
        async with pgconn.connect(node) as conn:
            roles = await (await conn.execute(_ROLES_SQL)).fetchall()
            databases = await (await conn.execute(_DATABASES_SQL)).fetchall()
    except psycopg.Error as e:
        raise pgconn.api_error(e, doing="could not read roles and databases") from None
    return responses.json_response(
        {
            "roles": [
                {"name": name, "encrypted_password": password, "options": None}
                for name, password in roles
            ],
            "databases": [
                {
                    "name": name,
                    "owner": owner,
                    "options": None,
                    "restrict_conn": restrict_conn,
                    "invalid": invalid,
                }
                for name, owner, restrict_conn, invalid in databases
            ],
        }
    )


@routes.get("/database_schema")
async def database_schema(request: web.Request) -> web.StreamResponse:
    node = request.app[responses.NODE]
    dbname = request.query.get("database")
    if not dbname:
        raise responses.ApiError(400, "query parameter 'database' is required")
    if "\x00" in dbname:
        raise responses.ApiError(400, "query parameter 'database' must not contain NUL")
    await pgconn.require_database(node, dbname)
    params = pgconn.libpq_params(node, dbname)
    env = {}
    if "password" in params:  # never on a command line, where ps would show it
        env["PGPASSWORD"] = str(params.pop("password"))
    params.pop("options", None)  # pg_dump sets its own search_path
    try:
        pg_dump = node.tools.tool("pg_dump")
        proc = await node.tools.spawn(
            [pg_dump, "--schema-only", f"--dbname={conninfo_mod.make_conninfo('', **params)}"],
            env=env,
        )
    except (errors.ComputeError, OSError) as e:
        raise responses.ApiError(500, f"failed to start pg_dump: {e}") from None
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        first = await proc.stdout.read(65536)
        if not first:
            code = await proc.wait()
            err = (await stderr_task).decode(errors="replace").strip()
            logger.warning("pg_dump of %r failed with code %s: %s", dbname, code, err[-2000:])
            if "does not exist" in err:
                raise responses.ApiError(404, f"database {dbname!r} does not exist")
            raise responses.ApiError(500, f"pg_dump failed with code {code}")
        # Neon's content type, although the body is pg_dump's SQL text, not JSON: clients
        # written against Neon may check it.
        response = responses.stream_response(request, content_type="application/json")
        await response.prepare(request)
        try:
            chunk = first
            while chunk:
                await response.write(chunk)
                chunk = await proc.stdout.read(65536)
            code = await proc.wait()
            if code != 0:
                err = (await stderr_task).decode(errors="replace").strip()
                logger.warning("pg_dump of %r exited with code %s: %s", dbname, code, err[-2000:])
            await response.write_eof()
        except (ConnectionError, OSError) as e:
            # Headers are sent: nothing to answer any more; the finally kills pg_dump.
            logger.info("schema dump of %r aborted: %s", dbname, e)
        return response
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not stderr_task.done():
            stderr_task.cancel()


@routes.get("/insights")
async def insights(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    responses.require_running(node.state)
    rows: list[Any] = []
    try:
        async with pgconn.connect(node) as conn:
            rows = await (await conn.execute(_INSIGHTS_SQL)).fetchall()
    except (pg_errors.UndefinedTable, pg_errors.ObjectNotInPrerequisiteState) as e:
        # pg_stat_statements not created or not preloaded: Neon answers an empty list.
        logger.info("insights: pg_stat_statements unavailable: %s", e.diag.message_primary)
    except psycopg.Error as e:
        raise pgconn.api_error(e, doing="could not collect insights") from None
    inner = '{"pg_stat_statements": [' + ",".join(row[0] for row in rows) + "]}"
    # Neon's body is a JSON string whose content is the JSON document.
    return web.Response(text=json.dumps(inner), content_type="application/json")


@routes.post("/check_writability")
async def check_writability(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    responses.require_running(node.state)
    try:
        async with pgconn.connect(node) as conn:
            try:
                await conn.execute(health_check.UPSERT_ROW)
            except pg_errors.UndefinedTable:
                # The apply creates it; this covers a table dropped since.
                await conn.execute(health_check.CREATE_TABLE)
                await conn.execute(health_check.UPSERT_ROW)
    except psycopg.Error as e:
        if e.sqlstate == _DISK_FULL:
            # Neon: a full disk still proves the timeline accepts writes up to its quota.
            logger.warning("check_writability: disk full, reporting writable")
        else:
            raise responses.ApiError(
                500, f"compute is not writable: {e.diag.message_primary or type(e).__name__}"
            ) from None
    return responses.json_response(True)
