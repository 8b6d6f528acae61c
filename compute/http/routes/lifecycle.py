"""``GET /status``, ``POST /configure`` and ``POST /terminate``: the compute's lifecycle API.

Thin adapters (Neon's ``configure.rs`` style): validate, hand the request to the node,
wait. ``/configure`` runs the node's admission before anything else (its dry run and its
``If-Match`` check included), so a refused spec is a 400 that changes nothing. Bodies are
``api_models``' and errors are translated by ``translate``. The node does the work and owns
every state change. Beyond Neon: ``ETag`` on ``/status`` (the desired spec hash),
``If-Match`` on ``/configure`` (412 on mismatch) and ``?dry_run=true`` (the plan only).
"""

from __future__ import annotations

import logging
import typing

import pydantic
from aiohttp import web

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import bodies, interface, responses

__all__ = ["routes"]

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

_TERMINATE_MODES: tuple[interface.TerminateMode, ...] = typing.get_args(interface.TerminateMode)


def _etag(spec_hash: str) -> str:
    return f'"{spec_hash}"'


@routes.get("/status")
async def get_status(request: web.Request) -> web.Response:
    return responses.status_response(request)


def _parse_config(raw: bytes) -> spec_mod.ComputeConfig:
    """Neon's ``/configure`` body (``ComputeConfig``), types as serde takes them.

    Validated as JSON in pydantic's strict mode, so ``false`` or ``"5"`` is not an integer
    (serde would refuse them too); the models' own wire conversions still apply. A valid
    body is parsed once; only a refused one is parsed again, for a precise message.
    """
    try:
        return api_models.ConfigureRequest.model_validate_json(raw, strict=True).config()
    except pydantic.ValidationError as e:
        invalid = e
    body = responses.parse_json(raw)
    if not isinstance(body, dict):
        raise responses.ApiError(400, "request body must be a JSON object")
    # Neon also requires "compute_ctl_config", then ignores it (JWKS and TLS are fixed at
    # start); older Neon clients, and ours, send the spec alone, so it is optional here.
    if "spec" not in body:
        raise responses.ApiError(400, "missing field: spec")
    if body["spec"] is None:
        raise responses.ApiError(400, "spec: must not be null")
    raise responses.ApiError(400, spec_mod.format_validation_error(invalid))


def _if_match(header: str, current_hash: str) -> bool:
    """RFC 9110 strong comparison against the desired spec hash; ``*`` needs a spec."""
    if header.strip() == "*":
        return current_hash != ""
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            continue  # weak tags never match strongly
        if tag == _etag(current_hash):
            return True
    return False


@routes.post("/configure")
async def configure(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    dry_run = responses.query_flag(request, "dry_run")
    config = await request.app[bodies.BODY_GATE].parse(request, _parse_config)
    admitted = node.admit(config)
    assert admitted.spec is not None
    if dry_run:
        plan = await node.plan(admitted.spec)
        answer = api_models.DryRunResponse.model_validate({"plan": list(plan.to_json())})
        return responses.model_response(answer)
    if_match = request.headers.get("If-Match")
    # Checked synchronously right before configure() takes the state lock: no other
    # request can store a spec in between on this event loop unless configure() has
    # to wait for the lock, and then it is the status check (412) that serialises.
    if if_match is not None and not _if_match(if_match, node.state.desired_hash):
        raise responses.ApiError(
            412,
            f"If-Match {if_match.strip()} does not match the desired spec "
            f"{_etag(node.state.desired_hash)}",
        )
    await node.configure(admitted)
    return responses.status_response(request)


@routes.post("/terminate")
async def terminate(request: web.Request) -> web.Response:
    node = request.app[responses.NODE]
    mode = request.query.get("mode", "fast")
    if mode not in _TERMINATE_MODES:
        raise responses.ApiError(400, "query parameter 'mode' must be 'fast' or 'immediate'")
    already, lsn = await node.terminate(mode)
    answer = api_models.TerminateResponse(lsn=lsn)
    return responses.model_response(answer, status=201 if already else 200)
