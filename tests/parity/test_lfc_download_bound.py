"""The endpoint storage's answer is read with a size bound: a damaged or hostile object
(or a storage that never stops sending) must not fill compute_ctl's memory before the
decompression bound is ever reached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from compute_ctl.compute.lfc import storage

BOUND = 64 * 1024


@pytest.fixture
async def serve() -> AsyncIterator[dict[str, bytes]]:
    """A loopback endpoint storage answering ``GET /big`` with ``bodies["big"]``."""
    bodies: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] == "trickle":  # a byte now and then, for ever
            response = web.StreamResponse()
            await response.prepare(request)
            while True:
                await response.write(b"x")
                await asyncio.sleep(0.1)
        body = bodies[request.match_info["name"]]
        if request.query.get("chunked"):
            response = web.StreamResponse()
            await response.prepare(request)
            for i in range(0, len(body), 8192):
                await response.write(body[i : i + 8192])
            await response.write_eof()
            return response
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/{name}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    bodies["port"] = str(port).encode()
    try:
        yield bodies
    finally:
        await runner.cleanup()


def _target(bodies: dict[str, bytes], query: str = "") -> storage.Target:
    return storage.Target(url=f"http://127.0.0.1:{bodies['port'].decode()}/big{query}", token="t")


@pytest.mark.parametrize("query", ["", "?chunked=1"])
async def test_a_body_over_the_bound_is_refused(
    serve: dict[str, bytes], query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MAX_DOWNLOAD_BYTES", BOUND, raising=False)
    serve["big"] = b"x" * (BOUND + 1)
    with pytest.raises(storage.StorageFailure, match="larger than"):
        await storage.download(_target(serve, query))


async def test_a_body_within_the_bound_is_read(
    serve: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MAX_DOWNLOAD_BYTES", BOUND, raising=False)
    serve["big"] = b"y" * BOUND
    assert await storage.download(_target(serve, "?chunked=1")) == serve["big"]


async def test_a_trickling_answer_is_bounded_as_a_whole(
    serve: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "_TOTAL_TIMEOUT_S", 1.0, raising=False)
    where = storage.Target(url=f"http://127.0.0.1:{serve['port'].decode()}/trickle", token="t")
    with pytest.raises(storage.StorageFailure, match="TimeoutError"):
        await asyncio.wait_for(storage.download(where), 15)
