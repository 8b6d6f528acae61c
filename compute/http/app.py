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

REQUEST_ID_HEADER = responses.REQUEST_ID_HEADER
# Echo a client's request id only if it is a plain token; anything else gets a fresh one.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,200}$")

# External paths that need no token: the scraper's and the kubelet's.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Bodies as large as a spec with thousands of roles are legitimate.
MAX_BODY_BYTES = 32 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = Callable[[web.Request], None]


def _error_response(request: web.Request, e: Exception, request_id: str) -> web.Response:
    if isinstance(e, responses.ApiError):
        return responses.error(e.status, e.message)
    if isinstance(e, web.HTTPException) and e.status >= 400:
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return responses.error(e.status, e.reason, headers=headers)
    logger.error(
        "unhandled error in %s %s (request %s)",
        request.method,
        request.path,
        request_id,
        exc_info=e,
    )
    return responses.error(500, "internal server error")


def _middleware(check: Check | None) -> typedefs.Middleware:
    """The one middleware of an app (one is measurably cheaper than a chain): request id,
    auth (external app), and every failure as ``{"error": ...}``."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(REQUEST_ID_HEADER)
        request_id = given if given and _REQUEST_ID_RE.match(given) else str(uuid.uuid4())
        request[responses.REQUEST_ID] = request_id  # streaming handlers set it themselves
        try:
            # Unknown paths and methods are answered 404/405 before any auth, as axum does.
            if (
                check is not None
                and request.match_info.http_exception is None
                and request.path not in OPEN_PATHS
            ):
                check(request)
            response = await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _error_response(request, e, request_id)
        except Exception as e:
            response = _error_response(request, e, request_id)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        if response.status >= 400:
            # Method, path and code only: never headers, query strings or bodies.
            logger.info(
                "%s %s -> %d (request %s)",
                request.method,
                request.path,
                response.status,
                request_id,
            )
        return response

    return handle


def _jwt_check(node: interface.Node, authorizer: auth.Authorizer) -> Check:
    def check(request: web.Request) -> None:
        authorizer.check(
            authorization=request.headers.get("Authorization"), jwks=node.state.config.jwks
        )

    return check


def build_app(
    node: interface.Node,
    *,
    metrics: metrics_mod.Metrics,
    external: bool,
) -> web.Application:
    """One application; ``external`` adds JWT auth and leaves out the internal routes."""
    check = None
    if external:
        authorizer = auth.Authorizer(
            compute_id=node.params.compute_id,
            allow_unauthenticated=node.params.allow_unauthenticated,
        )
        check = _jwt_check(node, authorizer)
    app = web.Application(middlewares=[_middleware(check)], client_max_size=MAX_BODY_BYTES)
    app[responses.NODE] = node
    app[responses.METRICS] = metrics
    app[responses.STATUS_CACHE] = responses.StatusCache()
    for module in (lifecycle, metrics_routes, catalog, probes):
        app.add_routes(module.routes)
    if not external:
        app.add_routes(internal.routes)
        app.add_routes(failpoints.routes)
    return app
