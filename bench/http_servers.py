"""Servers and load for ``bench.http_api``: the bare baseline, the target, a light client.

``python -m bench.http_servers bare|double ...`` is how the bench starts the bare aiohttp
app and the HTTP layer over the node double in processes of their own; ``target()``
starts a real compute_ctl instead when the node is in the tree. The bare app serves the
very bytes the target's ``/status`` answers (``bare_server(body)``). ``load()`` is a minimal
HTTP/1.1 client on raw asyncio streams, so the load generator costs less than the servers.
``cpu_seconds()`` reads a process's CPU clock (nanoseconds, every thread, live or gone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from tests import pgserver
from tests.support import compute_process

__all__ = [
    "COMPUTE_ID",
    "Target",
    "bare_server",
    "cpu_seconds",
    "load",
    "percentile",
    "status_body",
    "target",
]

REPO = Path(__file__).resolve().parent.parent
COMPUTE_ID = compute_process.COMPUTE_ID


# --- servers (run as subprocesses of the bench) --------------------------------------


def serve_bare(port: int, body: bytes) -> None:
    async def status(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", status)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_double(*, external_port: int, internal_port: int, jwk: dict[str, Any]) -> None:
    """The real HTTP layer over the node test double (no postgres needed for /status)."""
    from compute_ctl.compute import spec as spec_mod
    from compute_ctl.compute.http import server
    from tests.support import nodedouble

    async def main() -> None:
        node = nodedouble.NodeDouble(
            params=nodedouble.Params(
                compute_id=COMPUTE_ID,
                external_http_port=external_port,
                internal_http_port=internal_port,
            ),
            dsn="postgresql://cloud_admin@127.0.0.1:1/postgres",
        )
        node.state.config = spec_mod.ComputeCtlConfig(jwks=spec_mod.Jwks(keys=[jwk]))
        await node.start_running()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server.serving(node):
            print("ready", flush=True)
            await stop.wait()

    asyncio.run(main())


def _spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    # Not PYTHONPATH: the repository root holds an ``operator/`` folder that would shadow
    # the standard library's ``operator`` before ``site`` runs; ``-m`` from the root is safe.
    return subprocess.Popen(
        [sys.executable, "-m", "bench.http_servers", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pgserver.die_with_parent(),
    )


def _wait_http(url: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def status_body(url: str) -> bytes:
    """The body ``GET url`` answers (the target's ``/status`` document, for the baseline)."""
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.content


@contextlib.contextmanager
def bare_server(body: bytes) -> Iterator[tuple[str, int]]:
    """A bare aiohttp app answering ``GET /status`` with ``body``: (base URL, pid)."""
    port = pgserver.free_port()
    proc = _spawn(["bare", "--port", str(port), "--body", body.decode()])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/status")
        yield url, proc.pid
    finally:
        _stop(proc)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread included (exited ones too).

    Read from the process's CPU clock (``clock_getcpuclockid``), exact to the nanosecond:
    ``/proc/<pid>/stat`` counts in 10 ms ticks, too coarse for a few seconds of idle time.
    """
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        return time.clock_gettime(clock.value)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Target:
    """What is measured: its two base URLs and its process (for memory)."""

    def __init__(self, *, internal: str, external: str, pid: int, kind: str) -> None:
        self.internal = internal
        self.external = external
        self.pid = pid
        self.kind = kind

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def target(jwk: dict[str, Any], *, force_double: bool) -> Iterator[Target]:
    if not force_double:
        with compute_process.running_compute(jwks=[jwk]) as compute:
            yield Target(
                internal=compute.internal,
                external=compute.external,
                pid=compute.proc.pid,
                kind="compute_ctl",
            )
        return
    external_port, internal_port = pgserver.free_port(), pgserver.free_port()
    proc = _spawn(
        [
            "double",
            "--port",
            str(external_port),
            "--internal-port",
            str(internal_port),
            "--jwk",
            json.dumps(jwk),
        ]
    )
    try:
        _wait_http(f"http://127.0.0.1:{internal_port}/status")
        yield Target(
            internal=f"http://127.0.0.1:{internal_port}",
            external=f"http://127.0.0.1:{external_port}",
            pid=proc.pid,
            kind="HTTP layer over the node double",
        )
    finally:
        _stop(proc)


# --- load ------------------------------------------------------------------------------


async def load(
    url: str,
    *,
    requests_total: int,
    concurrency: int,
    headers: dict[str, str] | None = None,
) -> tuple[float, list[float]]:
    """``requests_total`` GETs over ``concurrency`` keep-alive connections.

    A minimal HTTP/1.1 client on raw asyncio streams, much cheaper than aiohttp's, so the
    load generator (sharing the machine) is less of a bottleneck than the servers.
    Returns (seconds, latencies in ms).
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    lines = [f"GET {parsed.path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    remaining = requests_total

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status != 200:
                    raise RuntimeError(f"{url}: HTTP {status}")
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_servers")
    parser.add_argument("kind", choices=["bare", "double"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--internal-port", type=int)
    parser.add_argument("--jwk")
    parser.add_argument("--body", help="bare: the /status body to serve")
    args = parser.parse_args(argv)
    if args.kind == "bare":
        serve_bare(args.port, args.body.encode())
    else:
        serve_double(
            external_port=args.port, internal_port=args.internal_port, jwk=json.loads(args.jwk)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
