"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness): open on both ports.

Liveness answers from the event loop alone (no SQL), so a slow or stopped postgres
never gets compute_ctl restarted. Readiness needs status ``running`` and a postgres that
answers ``SELECT 1``; the answer comes from the node's one ``readiness.Readiness``
(single-flight, cached briefly, one kept session), so a flood of tokenless probes costs
at most one backend.
"""

from __future__ import annotations

from aiohttp import web

from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import readiness, responses

__all__ = ["routes"]

routes = web.RouteTableDef()


def probe_of(request: web.Request) -> readiness.Readiness:
    node = request.app[responses.NODE]
    return responses.node_scoped(
        node, readiness.Readiness, lambda: readiness.Readiness(node.connstr())
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    status = request.app[responses.NODE].state.status
    return responses.json_response({"status": status.value})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    status = request.app[responses.NODE].state.status
    probe = probe_of(request)
    if status != state_mod.ComputeStatus.RUNNING:
        await probe.close()
        return responses.error(503, f"not ready: compute status is {status.kebab}")
    problem = await probe.check()
    if problem is not None:
        return responses.error(503, f"not ready: {problem}")
    return responses.json_response({"status": status.value})
