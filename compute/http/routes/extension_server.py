"""``POST /extension_server/{filename}?is_library=true|false`` (internal port only): what
Neon's postgres calls when ``CREATE EXTENSION`` or ``LOAD`` misses a file.

Thin: parse ``is_library`` (400 unless ``true``/``false``), hand the name and the desired
spec to the node's ``remote_ext.server.ExtensionServer``, and translate its refusals into
Neon's codes: 412 without ``--remote-ext-base-url``, 409 without
``spec.remote_extensions`` (also before any spec: Neon's handler panics there), 404 for a
name the spec does not resolve, 500 when the download or the unpacking fails; 200 with an
empty body once the files are in place.
"""

from __future__ import annotations

from aiohttp import web

from compute_ctl.compute.http import responses
from compute_ctl.compute.remote_ext import names, server

__all__ = ["routes"]

routes = web.RouteTableDef()

_BOOLS = {"true": True, "false": False}


@routes.post("/extension_server/{filename:.+}")
async def extension_server(request: web.Request) -> web.Response:
    raw = request.query.get("is_library", "false")
    if raw not in _BOOLS:
        raise responses.ApiError(400, f"is_library must be true or false, not {raw[:40]!r}")
    node = request.app[responses.NODE]
    try:
        await node.extension_server.request(
            node.state.desired, request.match_info["filename"], is_library=_BOOLS[raw]
        )
    except server.NotConfigured as e:
        raise responses.ApiError(412, str(e)) from None
    except server.SpecUnavailable as e:
        raise responses.ApiError(409, str(e)) from None
    except names.NotFound as e:
        raise responses.ApiError(404, str(e)) from None
    except server.DownloadFailed as e:
        raise responses.ApiError(500, str(e)) from None
    return web.Response(status=200)
