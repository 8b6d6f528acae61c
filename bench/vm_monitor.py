"""Benchmark: vm-monitor request latency against a bare aiohttp websocket echo.

The agent sends one request at a time (health checks aside), so what matters is the
round trip of one message. Measured in the same run, on loopback:

- baseline: an aiohttp websocket route that echoes each text frame back;
- HealthCheck: the monitor parses the envelope, echoes ``{"type":"HealthCheck","id":n}``;
- DownscaleRequest: the same plus a decision from cgroup figures (a fake cgroup dir).

Run: ``.venv/bin/python -m bench.vm_monitor [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from compute_ctl.compute import vm_monitor

GiB = 1 << 30


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def _round_trips(url: str, frames: list[str], *, handshake: bool) -> list[float]:
    times: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        if handshake:
            await ws.send_str('{"min":1,"max":1}')
            assert json.loads((await ws.receive()).data) == {"version": 1}
        for frame in frames:
            started = time.perf_counter()
            await ws.send_str(frame)
            msg = await ws.receive()
            times.append(time.perf_counter() - started)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return times


def _frames(kind: str, content: dict[str, object], n: int) -> list[str]:
    return [
        json.dumps({"content": content, "type": kind, "id": 2 * (i + 2)}, separators=(",", ":"))
        for i in range(n)
    ]


def _report(name: str, times: list[float], baseline: float) -> float:
    median = statistics.median(times)
    print(
        f"{name:<22} median {median * 1e6:8.1f} us   p95 "
        f"{sorted(times)[int(len(times) * 0.95)] * 1e6:8.1f} us   x{median / baseline:5.2f}"
    )
    return median


async def main(requests: int) -> None:
    app = web.Application()
    app.router.add_get("/echo", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    cgroup = Path(tempfile.mkdtemp(prefix="vm-monitor-bench-"))
    (cgroup / "memory.stat").write_text(f"active_anon {200 << 20}\ninactive_anon {50 << 20}\n")
    monitor = vm_monitor.VmMonitor(
        addr="127.0.0.1:0",
        cgroup_path=cgroup,
        filecache_connstr=None,
        disable_lfc_resizing=False,
        options=vm_monitor.Options(mem_total=4 * GiB),
    )
    await monitor.start()
    url = f"ws://127.0.0.1:{monitor.port}/monitor"
    try:
        health = _frames("HealthCheck", {}, requests)
        echo = await _round_trips(f"ws://127.0.0.1:{port}/echo", health, handshake=False)
        base = _report("baseline echo", echo, statistics.median(echo))
        _report("HealthCheck", await _round_trips(url, health, handshake=True), base)
        down = _frames("DownscaleRequest", {"target": {"cpu": 0.25, "mem": GiB}}, requests)
        _report("DownscaleRequest", await _round_trips(url, down, handshake=True), base)
    finally:
        await monitor.stop()
        await runner.cleanup()
        shutil.rmtree(cgroup, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="round trips per case")
    asyncio.run(main(parser.parse_args().requests))
