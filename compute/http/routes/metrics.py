"""``GET /metrics`` (Prometheus text, open) and ``GET /metrics.json`` (startup timings).

Renders the compute's own ``CollectorRegistry`` (``compute.metrics``) and the node's
``Timings`` under Neon's names; records nothing itself.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import exposition

from compute_ctl.compute.http import responses

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    registry = request.app[responses.METRICS].registry
    body = exposition.generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = exposition.CONTENT_TYPE_LATEST
    return response


@routes.get("/metrics.json")
async def get_metrics_json(request: web.Request) -> web.Response:
    return responses.json_response(request.app[responses.NODE].state.timings.as_dict())
