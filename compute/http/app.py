"""The two aiohttp applications: external (JWT) and internal (loopback, no auth, Neon's
internal routes only).

Owns what every request goes through: the ``x-request-id`` header (echoed, or a new
UUID-shaped id), rendering every failure as ``{"error": "..."}`` through
``translate`` (the one mapping of errors to codes; 404 unknown path, 405 wrong method with
``Allow``), and the JWT check on the external app. Route handlers live in ``routes``;
this module only wires them.

No aiohttp middleware is used: each route's handler is wrapped once, at registration,
and a catch-all route answers unknown paths and methods. A middleware chain costs two
extra coroutine layers per request, about 15% of ``/status``'s time.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import hdrs, web

from compute_ctl.compute import logformat, loghygiene
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute.http import auth, bodies, guards, interface, responses, translate
from compute_ctl.compute.http.routes import (
    catalog,
    failpoints,
    internal,
    lfc,
    lifecycle,
    probes,
    promote,
)
from compute_ctl.compute.http.routes import extension_server as extension_server_routes
from compute_ctl.compute.http.routes import metrics as metrics_routes

__all__ = ["OPEN_PATHS", "REQUEST_ID_HEADER", "build_app", "served_internally"]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = responses.REQUEST_ID_HEADER
# Echo a client's request id only if it is a plain token; anything else gets a fresh one.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,200}$")

# External paths that need no token: the scraper's and the kubelet's.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# What the internal (loopback, unauthenticated) port serves, as Neon's does: the routes
# postgres and its extensions call, plus the probes. Anything in the pod's network
# namespace reaches it (postgres itself: an extension, a superuser's COPY ... PROGRAM), so
# nothing that reconfigures or terminates the compute is there. ``--internal-full-api``
# (tests and local development only) serves the whole API there instead.
INTERNAL_PREFIXES = ("/extension_server/",)
INTERNAL_PATHS = frozenset(
    {"/extensions", "/grants", "/failpoints", "/refresh_configuration", "/healthz", "/readyz"}
)


def served_internally(path: str, *, full: bool) -> bool:
    """Whether the internal port serves ``path`` (the route-table filter)."""
    return full or path in INTERNAL_PATHS or path.startswith(INTERNAL_PREFIXES)


# Bodies as large as a spec with thousands of roles are legitimate (``bodies``).
MAX_BODY_BYTES = bodies.MAX_BODY_BYTES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = Callable[[web.Request], None]

# Request ids: a random UUIDv4-shaped prefix per process and a counter, unique and about
# ten times cheaper than uuid.uuid4() on every request.
_ID_PREFIX = secrets.token_hex(10)
_ID_PREFIX = f"{_ID_PREFIX[:8]}-{_ID_PREFIX[8:12]}-4{_ID_PREFIX[13:16]}-a{_ID_PREFIX[17:20]}-"
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def _wrap(handler: Handler, check: Check | None, guard: Check) -> Handler:
    """Request id, ``guard`` (cross-site), auth (``check``, external app) and every failure
    as ``{"error": ...}``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        given = request.headers.get(REQUEST_ID_HEADER)
        request_id = given if given and _REQUEST_ID_RE.match(given) else new_request_id()
        # On every log line of this request (its task), and on a streamed response's headers
        # (``responses.stream_response``): those are sent before this function sees them.
        logformat.REQUEST_ID.set(request_id)
        try:
            guard(request)
            if check is not None:
                check(request)
            response = await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = translate.error_response(request, e, request_id)
        except Exception as e:
            response = translate.error_response(request, e, request_id)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        if response.status >= 400:
            # Method, path and code only: never headers, query strings or bodies; the path
            # is the client's, so its control characters are escaped (``%0d``).
            logger.info(
                "%s %s -> %d (request %s)",
                loghygiene.clip(request.method, 20),
                loghygiene.clip(request.path),
                response.status,
                request_id,
            )
        return response

    return handle


def _fallback(
    allowed: Mapping[str, Iterable[str]], dynamic: Mapping[re.Pattern[str], str]
) -> Handler:
    """Unknown path: 404. Known path (or one matching a ``{name}`` route), other method:
    405 with ``Allow`` (before any auth)."""
    allow = {path: ", ".join(sorted(methods)) for path, methods in allowed.items()}

    async def fallback(request: web.Request) -> web.StreamResponse:
        methods = allow.get(request.path)
        if methods is None:
            methods = next((m for p, m in dynamic.items() if p.fullmatch(request.path)), None)
        if methods is None:
            raise responses.ApiError(404, "Not Found")
        return responses.error(405, "Method Not Allowed", headers={"Allow": methods})

    return fallback


def _jwt_check(node: interface.Node, authorizer: auth.Authorizer) -> Check:
    def check(request: web.Request) -> None:
        authorizer.check(
            authorization=request.headers.get(hdrs.AUTHORIZATION), jwks=node.state.config.jwks
        )

    return check


def build_app(
    node: interface.Node,
    *,
    metrics: metrics_mod.Metrics,
    external: bool,
    gate: bodies.BodyGate | None = None,
) -> web.Application:
    """One application; ``external`` adds JWT auth and leaves out the internal routes.

    ``gate``: the process's ``BodyGate``, shared by both servers (a new one if omitted).
    """
    check = None
    if external:
        authorizer = auth.Authorizer(
            compute_id=node.params.compute_id,
            allow_unauthenticated=node.params.allow_unauthenticated,
        )
        check = _jwt_check(node, authorizer)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[responses.NODE] = node
    app[responses.METRICS] = metrics
    app[responses.STATUS_CACHE] = responses.StatusCache(node)
    app[bodies.BODY_GATE] = gate or bodies.BodyGate()
    internal_port = None if external else node.params.internal_http_port

    guard = guards.checker(internal_port=internal_port)

    tables = [lifecycle.routes, metrics_routes.routes, catalog.routes, probes.routes, lfc.routes]
    tables.append(promote.routes)
    if not external:
        tables += [internal.routes, failpoints.routes, extension_server_routes.routes]
    full = bool(node.params.internal_full_api)
    allowed: dict[str, set[str]] = {}
    dynamic: dict[re.Pattern[str], str] = {}
    for table in tables:
        for route in table:
            assert isinstance(route, web.RouteDef)
            if not external and not served_internally(route.path, full=full):
                continue
            guarded = check if route.path not in OPEN_PATHS else None
            wrapped = _wrap(route.handler, guarded, guard)
            if route.method == "GET":
                added = app.router.add_get(route.path, wrapped, **route.kwargs)  # and HEAD
                allowed.setdefault(route.path, set()).update(("GET", "HEAD"))
            else:
                added = app.router.add_route(route.method, route.path, wrapped, **route.kwargs)
                allowed.setdefault(route.path, set()).add(route.method)
            info = added.resource.get_info() if added.resource is not None else {}
            if "pattern" in info:  # a {name} route: /extension_server/{filename}
                dynamic[info["pattern"]] = ", ".join(sorted(allowed[route.path]))
    fallback = _fallback(allowed, dynamic)
    app.router.add_route("*", r"/{tail:[\s\S]*}", _wrap(fallback, None, guard))
    return app
