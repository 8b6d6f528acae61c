"""Internal-port endpoints the neon extension and local_proxy call: ``POST /grants`` and
``POST /extensions`` (Neon's ``SetRoleGrantsRequest`` / ``ExtensionInstallRequest``).

Thin: parse the body (``api_models``), require status ``running`` (412), hand the request
to ``catalog.ondemand`` (which owns the SQL, the idempotency and the refusals), answer
201 echoing what was asked. Served on the loopback port only, never the external one.
Beyond Neon, a database, schema or role that does not exist is 404, a value PostgreSQL
rejects is 400 (Neon answers 500 for both), and system schemas are refused (400).
"""

from __future__ import annotations

from typing import TypeVar

import pydantic
from aiohttp import web

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import ondemand
from compute_ctl.compute.http import responses

__all__ = ["routes"]

routes = web.RouteTableDef()

_M = TypeVar("_M", bound=pydantic.BaseModel)


async def _running_request(request: web.Request, model: type[_M]) -> tuple[str, _M]:
    """The body as ``model`` (400), then status ``running`` (412); the node's connstr."""
    node = request.app[responses.NODE]
    try:
        body = model.model_validate(await responses.read_json(request))
    except pydantic.ValidationError as e:
        raise responses.ApiError(400, spec_mod.format_validation_error(e)) from None
    responses.require_running(node.state)
    return node.connstr(), body


@routes.post("/grants")
async def grants(request: web.Request) -> web.Response:
    connstr, req = await _running_request(request, api_models.GrantsRequest)
    await ondemand.grant_schema_privileges(
        connstr,
        database=req.database,
        schema=req.schema_name,
        role=req.role,
        privileges=req.privileges,
    )
    answer = api_models.GrantsResponse(
        database=req.database, schema=req.schema_name, role=req.role, privileges=req.privileges
    )
    return responses.model_response(answer, status=201)


@routes.post("/extensions")
async def extensions(request: web.Request) -> web.Response:
    connstr, req = await _running_request(request, api_models.ExtensionRequest)
    await ondemand.install_extension(
        connstr, database=req.database, extension=req.extension, version=req.version
    )
    answer = api_models.ExtensionInstallResponse(extension=req.extension, version=req.version)
    return responses.model_response(answer, status=201)
