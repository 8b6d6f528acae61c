"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness): open on both ports.

Liveness answers from the event loop alone (no SQL), so a slow or stopped postgres
never gets compute_ctl restarted; but a compute ``failed`` for longer than
``--failed-exit-delay`` answers 503, so Kubernetes restarts it (a failed start also makes
compute_ctl exit after that delay: liveness is the safety net should it not).
Readiness is the rule of the operator's ``Ready`` condition, one rule for both: the
compute was configured once and serves (``running``, or reconfiguring:
``configuration_pending``/``configuration``, during which postgres keeps serving) and
postgres answers ``SELECT 1``; the answer comes from the node's one ``readiness.Readiness``
(single-flight, cached briefly, one kept session), so a flood of tokenless probes costs
at most one backend.
"""

from __future__ import annotations

import time

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


_SERVING = frozenset(
    {
        state_mod.ComputeStatus.RUNNING,
        state_mod.ComputeStatus.CONFIGURATION_PENDING,
        state_mod.ComputeStatus.CONFIGURATION,
    }
)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    state = node.state
    if state.status is state_mod.ComputeStatus.FAILED:
        failed_for = time.monotonic() - state.status_since
        if failed_for > node.params.failed_exit_delay:
            return responses.error(503, f"compute failed {failed_for:.0f} s ago: {state.error}")
    return responses.json_response({"status": state.status.value})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[responses.NODE].state
    status = state.status
    probe = probe_of(request)
    if status not in _SERVING or state.applied_generation == 0:
        await probe.close()
        return responses.error(503, f"not ready: compute status is {status.kebab}")
    problem = await probe.check()
    if problem is not None:
        return responses.error(503, f"not ready: {problem}")
    return responses.json_response({"status": status.value})
