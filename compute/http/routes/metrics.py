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
    # Neon's exposition format (0.0.4); newer prometheus-client versions default to 1.0.0.
    response.headers["Content-Type"] = exposition.CONTENT_TYPE_PLAIN_0_0_4
    return response


@routes.get("/metrics.json")
async def get_metrics_json(request: web.Request) -> web.Response:
    return responses.json_response(request.app[responses.NODE].state.timings.as_dict())
