"""``POST /promote``: make this replica the primary (Neon's ``routes/promote.rs``).

A thin adapter: parse ``{"spec", "wal_flush_lsn"}`` through the body gate, admit the
spec (400 if refused, as ``/configure``), hand it to the node, which runs or joins the
one promotion (``compute.promote``), and answer its outcome: 200 ``{"status":
"completed", "lsn_wait_time_ms", "pg_promote_time_ms", "reconfigure_time_ms"}`` or 500
``{"status": "failed", "error"}``. A compute that is not running is 412.
"""

from __future__ import annotations

import pydantic
from aiohttp import web

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import bodies, responses

__all__ = ["routes"]

routes = web.RouteTableDef()


def _parse(raw: bytes) -> api_models.PromoteRequest:
    try:
        return api_models.PromoteRequest.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as e:
        invalid = e
    if not isinstance(responses.parse_json(raw), dict):
        raise responses.ApiError(400, "request body must be a JSON object")
    raise responses.ApiError(400, spec_mod.format_validation_error(invalid))


@routes.post("/promote")
async def promote(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    body = await request.app[bodies.BODY_GATE].parse(request, _parse)
    admitted = node.admit(spec_mod.ComputeConfig(spec=body.spec)).spec
    assert admitted is not None
    outcome = await node.promote(admitted, wal_flush_lsn=body.wal_flush_lsn)
    if outcome.status == "completed":
        answer: pydantic.BaseModel = api_models.PromoteResponse(
            lsn_wait_time_ms=outcome.lsn_wait_time_ms,
            pg_promote_time_ms=outcome.pg_promote_time_ms,
            reconfigure_time_ms=outcome.reconfigure_time_ms,
        )
        return responses.model_response(answer)
    answer = api_models.PromoteFailed(error=outcome.error or "promotion failed")
    return responses.model_response(answer, status=500)
