"""A small endpoint storage on loopback, speaking Neon's protocol (``endpoint_storage``).

``PUT`` and ``GET /<tenant_id>/<timeline_id>/<endpoint_id>/<key>`` with
``Authorization: Bearer <JWT>``: an EdDSA token whose ``tenant_id``, ``timeline_id`` and
``endpoint_id`` claims must name the path's, and whose ``exp`` must not have passed (401
otherwise). ``GET`` of an object never written is 404. ``objects`` holds what was
stored, ``requests`` what was asked (method, path, answer); ``fail_with`` makes every
request answer that code; ``hold`` (an unset event) makes ``GET`` wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import OKPKey

from tests import pgserver
from tests.support import jwts

__all__ = ["EndpointStorage", "serving"]

_PATH = re.compile(r"^/([0-9a-f]{32})/([0-9a-f]{32})/([^/]+)/([^/]+)$")


@dataclasses.dataclass
class EndpointStorage:
    key: OKPKey
    port: int = 0
    objects: dict[str, bytes] = dataclasses.field(default_factory=dict)
    requests: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    fail_with: int | None = None
    hold: asyncio.Event | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self, *, tenant_id: str, timeline_id: str, endpoint_id: str, ttl: int = 3600) -> str:
        claims = {
            "tenant_id": tenant_id,
            "timeline_id": timeline_id,
            "endpoint_id": endpoint_id,
            "exp": int(time.time()) + ttl,
        }
        return jwts.token(self.key, claims)

    def _authorized(self, request: web.Request, ids: tuple[str, str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                claims: dict[str, Any] = jwt.decode(
                    header[len("Bearer ") :], self.key, algorithms=["EdDSA"]
                ).claims
        except (jose_errors.JoseError, ValueError):
            return False
        wanted = dict(zip(("tenant_id", "timeline_id", "endpoint_id"), ids, strict=True))
        return (
            all(claims.get(k) == v for k, v in wanted.items())
            and claims.get("exp", 0) > time.time()
        )

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.requests.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if self.fail_with is not None:
            return web.Response(status=self.fail_with)
        match = _PATH.match(request.path)
        if match is None:
            return web.Response(status=400)
        if not self._authorized(request, (match[1], match[2], match[3])):
            return web.Response(status=401)
        if request.method == "PUT":
            self.objects[request.path] = await request.read()
            return web.Response(status=200)
        if self.hold is not None:
            await self.hold.wait()
        found = self.objects.get(request.path)
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[EndpointStorage]:
    """An endpoint storage on a free loopback port, with a fresh Ed25519 key."""
    storage = EndpointStorage(key=jwts.ed25519(), port=pgserver.free_port())
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("PUT", "/{tail:.*}", storage.handle)
    app.router.add_route("GET", "/{tail:.*}", storage.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", storage.port).start()
    try:
        yield storage
    finally:
        await runner.cleanup()
