"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness): open on both ports.

Liveness answers from the event loop alone (no SQL), so a slow or stopped postgres
never gets compute_ctl restarted. Readiness needs status ``running`` and a postgres
that accepts a connection and answers ``SELECT 1`` within a short timeout.
"""

from __future__ import annotations

import psycopg
from aiohttp import web

from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import pgconn, responses

__all__ = ["routes"]

routes = web.RouteTableDef()

READY_TIMEOUT_SECONDS = 2.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    status = request.app[responses.NODE].state.status
    return responses.json_response({"status": status.value})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    status = node.state.status
    if status != state_mod.ComputeStatus.RUNNING:
        return responses.error(503, f"not ready: compute status is {status.kebab}")
    try:
        async with pgconn.connect(node, timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, OSError, TimeoutError) as e:
        return responses.error(503, f"not ready: postgres does not answer: {type(e).__name__}")
    return responses.json_response({"status": status.value})
