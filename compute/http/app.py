"""The two aiohttp applications: external (JWT) and internal (loopback, no auth).

Owns what every request goes through: the ``x-request-id`` header (echoed, or a new
UUID), the translation of every failure into ``{"error": "..."}`` with the right code
(404 unknown path, 405 wrong method, ``ApiError``'s code, 500 for a bug), and the JWT
check on the external app. Route handlers live in ``routes``; this module only wires.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import typedefs, web

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute.http import auth, interface, responses
from compute_ctl.compute.http.routes import catalog, failpoints, internal, lifecycle, probes
from compute_ctl.compute.http.routes import metrics as metrics_routes

__all__ = ["REQUEST_ID_HEADER", "build_app"]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Echo a client's request id only if it is a plain token; anything else gets a fresh one.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,200}$")
_REQUEST_ID = web.RequestKey("request_id", str)

# External paths that need no token: the scraper's and the kubelet's.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Bodies as large as a spec with thousands of roles are legitimate.
MAX_BODY_BYTES = 32 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id(request: web.Request) -> str:
    try:
        return request[_REQUEST_ID]
    except KeyError:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        value = given if _REQUEST_ID_RE.match(given) else str(uuid.uuid4())
        request[_REQUEST_ID] = value
        return value


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare runs for every response, streamed ones included.
    request_id = _request_id(request)
    response.headers[REQUEST_ID_HEADER] = request_id
    if response.status >= 400:
        # Method, path and code only: never headers, query strings or bodies (tokens, specs).
        logger.info(
            "%s %s -> %d (request %s)", request.method, request.path, response.status, request_id
        )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    _request_id(request)
    try:
        return await handler(request)
    except responses.ApiError as e:
        return responses.error(e.status, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return responses.error(e.status, e.reason, headers=headers)
    except Exception:
        logger.exception(
            "unhandled error in %s %s (request %s)",
            request.method,
            request.path,
            _request_id(request),
        )
        return responses.error(500, "internal server error")


def _auth_middleware(node: interface.Node, authorizer: auth.Authorizer) -> typedefs.Middleware:
    @web.middleware
    async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Unknown paths and methods are answered 404/405 before any auth, as axum does.
        if request.match_info.http_exception is None and request.path not in OPEN_PATHS:
            authorizer.check(
                authorization=request.headers.get("Authorization"),
                jwks=node.state.config.jwks,
            )
        return await handler(request)

    return _auth


def build_app(
    node: interface.Node,
    *,
    metrics: metrics_mod.Metrics,
    external: bool,
) -> web.Application:
    """One application; ``external`` adds JWT auth and leaves out the internal routes."""
    middlewares: list[typedefs.Middleware] = [_errors]
    if external:
        authorizer = auth.Authorizer(
            compute_id=node.params.compute_id,
            allow_unauthenticated=node.params.allow_unauthenticated,
        )
        middlewares.append(_auth_middleware(node, authorizer))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=MAX_BODY_BYTES,
    )
    app[responses.NODE] = node
    app[responses.METRICS] = metrics
    app.on_response_prepare.append(_add_request_id)
    for module in (lifecycle, metrics_routes, catalog, probes):
        app.add_routes(module.routes)
    if not external:
        app.add_routes(internal.routes)
        app.add_routes(failpoints.routes)
    return app
