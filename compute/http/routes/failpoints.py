"""``POST /failpoints`` on the internal port: set failpoints at run time (tests only).

Neon's shape: ``[{"name": ..., "actions": ...}]`` answered 200 with an empty body; 412
when compute_ctl was not started with ``--failpoints``; 400 for a malformed body or
action. Every entry is validated before any is applied, so a bad request changes nothing.
"""

from __future__ import annotations

import logging

import pydantic
from aiohttp import web

from compute_ctl.compute import failpoints as failpoints_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import responses

__all__ = ["routes"]

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


class FailpointConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", strict=True)

    name: str = pydantic.Field(min_length=1, max_length=200)
    actions: str = pydantic.Field(max_length=200)


_Body = pydantic.TypeAdapter(list[FailpointConfig])


@routes.post("/failpoints")
async def configure_failpoints(request: web.Request) -> web.Response:
    fps = request.app[responses.NODE].failpoints
    # The body is checked first, as Neon's JSON extractor does before the handler runs.
    body = await responses.read_json(request)
    try:
        items = _Body.validate_python(body)
    except pydantic.ValidationError as e:
        raise responses.ApiError(400, spec_mod.format_validation_error(e)) from None
    if not fps.enabled:
        raise responses.ApiError(
            412, "cannot manage failpoints: compute_ctl was started without --failpoints"
        )
    for item in items:
        try:
            failpoints_mod.parse_action(item.actions)
        except ValueError as e:
            raise responses.ApiError(
                400, f"failed to configure failpoint {item.name!r}: {e}"
            ) from None
    for item in items:
        logger.info("failpoint %s = %s", item.name, item.actions)
        fps.set(item.name, item.actions)
    return web.Response(status=200)
