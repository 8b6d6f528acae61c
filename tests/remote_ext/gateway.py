"""A stand-in for Neon's extension gateway: an aiohttp server on loopback that serves
archives by path, counts the requests, and fails on demand (a status for a path, or a
response held until the test releases it)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from aiohttp import web

from tests import pgserver


@dataclasses.dataclass
class Gateway:
    port: int
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    hold: asyncio.Event | None = None
    requests: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ext/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests[path] += 1
        if self.hold is not None:
            await self.hold.wait()
        if path in self.statuses:
            return web.Response(status=self.statuses[path], text="gateway says no")
        body = self.files.get(path)
        if body is None:
            return web.Response(status=404, text="no such archive")
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), 4096):  # in pieces, as a real transfer arrives
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Gateway]:
    gateway = Gateway(port=pgserver.free_port())
    app = web.Application()
    app.router.add_get("/ext/{path:.+}", gateway.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", gateway.port).start()
        yield gateway
    finally:
        if gateway.hold is not None:
            gateway.hold.set()
        await runner.cleanup()
