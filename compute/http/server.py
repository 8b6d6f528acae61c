"""MINIMAL HTTP server (core's stand-in): ``serving(node)`` with GET /status, POST /configure
and POST /terminate, JSON errors. The "http" helper's full server (JWT, metrics, every Neon
route) replaces this module wholesale; keep the ``serving`` signature.

The internal server binds 127.0.0.1 without auth. The external one serves the same routes
only with ``--allow-unauthenticated`` and no JWKS keys (this version verifies no JWT).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from compute_ctl.compute import errors
from compute_ctl.compute import node as node_mod
from compute_ctl.compute import spec as spec_mod

__all__ = ["serving"]

_NODE = web.AppKey("node", node_mod.ComputeNode)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _status_body(node: node_mod.ComputeNode) -> dict[str, Any]:
    s = node.state
    spec = s.desired
    return {
        "start_time": s.start_time.isoformat().replace("+00:00", "Z"),
        "tenant": spec.tenant_id if spec else None,
        "timeline": spec.timeline_id if spec else None,
        "status": s.status.value,
        "last_active": s.last_active.isoformat() if s.last_active else None,
        "error": s.error,
        "desired_generation": s.desired_generation,
        "applied_generation": s.applied_generation,
        "desired_spec_hash": s.desired_hash,
        "applied_spec_hash": s.applied_hash,
        "pending_restart": list(s.pending_restart),
        "mode": spec.mode.type_name if spec else None,
    }


async def _status(request: web.Request) -> web.Response:
    node = request.app[_NODE]
    return web.json_response(_status_body(node), headers={"ETag": f'"{node.state.desired_hash}"'})


async def _configure(request: web.Request) -> web.Response:
    node = request.app[_NODE]
    try:
        config = spec_mod.ComputeConfig.model_validate(json.loads(await request.text()))
    except ValueError as e:
        if isinstance(e, pydantic.ValidationError):
            return _error(400, spec_mod.format_validation_error(e))
        return _error(400, f"invalid JSON body: {e}")
    try:
        await node.configure(config)
    except errors.ConfigError as e:
        return _error(400, str(e))
    except errors.StatusError as e:
        return _error(412, str(e))
    except errors.ComputeError as e:
        return _error(500, str(e))
    return web.json_response(_status_body(node))


async def _terminate(request: web.Request) -> web.Response:
    mode = request.query.get("mode", "fast")
    if mode not in ("fast", "immediate"):
        return _error(400, f"invalid mode {mode!r}: expected fast or immediate")
    try:
        already, lsn = await request.app[_NODE].terminate(
            "immediate" if mode == "immediate" else "fast"
        )
    except errors.StatusError as e:
        return _error(412, str(e))
    return web.json_response({"lsn": lsn}, status=201 if already else 200)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        return _error(e.status, e.reason)


def _app(node: node_mod.ComputeNode, *, external: bool) -> web.Application:
    middlewares: list[Any] = [_json_errors]
    if external:
        open_api = node.params.allow_unauthenticated and not node.state.config.jwks.keys

        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not open_api:
                return _error(401, "authentication required (minimal server: no JWT support)")
            return await handler(request)

        middlewares.append(auth)
    app = web.Application(middlewares=middlewares)
    app[_NODE] = node
    app.router.add_get("/status", _status)
    app.router.add_post("/configure", _configure)
    app.router.add_post("/terminate", _terminate)
    return app


@contextlib.asynccontextmanager
async def serving(node: node_mod.ComputeNode) -> AsyncIterator[None]:
    """Serve the internal and external APIs while the block runs."""
    p = node.params
    runners: list[web.AppRunner] = []
    try:
        for external, host, port in (
            (False, "127.0.0.1", p.internal_http_port),
            (True, p.external_http_host, p.external_http_port),
        ):
            runner = web.AppRunner(
                _app(node, external=external), access_log=None, shutdown_timeout=5.0
            )
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port).start()
        yield
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
