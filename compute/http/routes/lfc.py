"""``/lfc/prewarm`` (GET, POST, DELETE) and ``/lfc/offload`` (GET, POST): Neon's shapes
and codes (``http/routes/lfc.rs``). Thin: the node's ``compute.lfc.controller.Lfc`` does
the work; a POST answers 202 with an empty body once the worker is spawned, 429 while
one runs. External port, behind the JWT, as in Neon.
"""

from __future__ import annotations

from aiohttp import web

from compute_ctl.compute.http import responses
from compute_ctl.compute.lfc import controller, storage

__all__ = ["routes"]

routes = web.RouteTableDef()


def _state(body: bytes) -> web.Response:
    return responses.json_bytes_response(body)


@routes.get("/lfc/prewarm")
async def prewarm_state(request: web.Request) -> web.Response:
    return _state(request.app[responses.NODE].lfc.prewarm_state.body())


@routes.post("/lfc/prewarm")
async def prewarm(request: web.Request) -> web.Response:
    from_endpoint = None
    if request.query_string:
        # Neon's query extractor refuses a query string without the parameter (400).
        if "from_endpoint" not in request.query:
            raise responses.ApiError(400, "missing field `from_endpoint`")
        from_endpoint = request.query["from_endpoint"]
        if not from_endpoint:
            raise responses.ApiError(400, "from_endpoint must not be empty")
        try:
            storage.check_endpoint_id(from_endpoint)
        except storage.StorageFailure as e:
            raise responses.ApiError(400, f"from_endpoint: {e}") from None
    try:
        request.app[responses.NODE].lfc.start_prewarm(from_endpoint=from_endpoint)
    except controller.Busy as e:
        raise responses.ApiError(429, str(e)) from None
    return web.Response(status=202)


@routes.delete("/lfc/prewarm")
async def cancel_prewarm(request: web.Request) -> web.Response:
    request.app[responses.NODE].lfc.cancel_prewarm()
    return web.Response(status=202)


@routes.get("/lfc/offload")
async def offload_state(request: web.Request) -> web.Response:
    return _state(request.app[responses.NODE].lfc.offload_state.body())


@routes.post("/lfc/offload")
async def offload(request: web.Request) -> web.Response:
    try:
        request.app[responses.NODE].lfc.start_offload()
    except controller.Busy as e:
        raise responses.ApiError(429, str(e)) from None
    return web.Response(status=202)
