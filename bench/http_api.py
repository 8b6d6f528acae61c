"""Benchmark of the HTTP API: /status throughput and latency, /configure round trip, memory.

Run: ``.venv/bin/python -m bench.http_api`` (about a minute; ``--help`` for bigger runs).

1. ``GET /status`` with 64 concurrent clients: requests per second, p50 and p99, for a bare
   aiohttp app serving the same body (the baseline, measured in the same run) and for
   compute_ctl's internal port (no auth) and external port (JWT). Target: >= 0.8x bare.
2. ``POST /configure`` changing one setting (work_mem) and waiting for it to be applied,
   against ``psql -c "ALTER SYSTEM SET work_mem ..." -c "SELECT pg_reload_conf()"``.
3. compute_ctl's resident memory after 2,000 / 5,000 / 10,000 requests (status, metrics,
   404s, auth failures). Target: < 80 MB and not growing.

The servers run in their own processes so the client does not share their GIL. With a
real compute_ctl in the tree (``compute_ctl.compute.node``) it is the target; without one,
the HTTP layer is served over a node test double and section 2 is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import requests
from aiohttp import web

from tests import pgserver
from tests.http import jwts, realcompute

REPO = Path(__file__).resolve().parent.parent
COMPUTE_ID = realcompute.COMPUTE_ID


# --- servers (run as subprocesses of the bench) --------------------------------------


def _bare_status_body() -> bytes:
    """The same document compute_ctl's /status returns, built once."""
    return json.dumps(
        {
            "start_time": "2026-01-01T00:00:00.000000Z",
            "tenant": None,
            "timeline": None,
            "status": "running",
            "last_active": None,
            "error": None,
            "desired_generation": 1,
            "applied_generation": 1,
            "desired_spec_hash": "0123456789abcdef",
            "applied_spec_hash": "0123456789abcdef",
            "pending_restart": [],
            "mode": "primary",
        },
        separators=(",", ":"),
    ).encode()


def serve_bare(port: int) -> None:
    body = _bare_status_body()

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", status)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_double(*, external_port: int, internal_port: int, jwk: dict[str, Any]) -> None:
    """The real HTTP layer over the node test double (no postgres needed for /status)."""
    from compute_ctl.compute import spec as spec_mod
    from compute_ctl.compute.http import server
    from tests.http import nodedouble

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
        [sys.executable, "-m", "bench.http_api", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    port = pgserver.free_port()
    proc = _spawn(["--serve", "bare", "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/status")
        yield url, proc.pid
    finally:
        _stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
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
    if realcompute.available() and not force_double:
        with realcompute.compute_ctl(jwks=[jwk]) as compute:
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
            "--serve",
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


async def _load(
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_status(
    *,
    bare: tuple[str, int],
    tgt: Target,
    token: str,
    requests_total: int,
    concurrency: int,
    rounds: int,
) -> None:
    print(f"\n== GET /status, {concurrency} concurrent clients, {requests_total} requests")
    bare_url, bare_pid = bare
    runs = {
        "bare aiohttp (baseline)": (f"{bare_url}/status", None, bare_pid),
        "compute_ctl internal (no auth)": (f"{tgt.internal}/status", None, tgt.pid),
        "compute_ctl external (JWT)": (
            f"{tgt.external}/status",
            {"Authorization": f"Bearer {token}"},
            tgt.pid,
        ),
    }
    for url, headers, _ in runs.values():  # warm up every server
        await _load(url, requests_total=500, concurrency=concurrency, headers=headers)
    best: dict[str, tuple[float, float, float, float]] = {}
    for _ in range(rounds):  # interleaved, best of N: the machine is shared
        for name, (url, headers, pid) in runs.items():
            cpu_before = cpu_seconds(pid)
            seconds, lat = await _load(
                url, requests_total=requests_total, concurrency=concurrency, headers=headers
            )
            cpu_us = (cpu_seconds(pid) - cpu_before) / requests_total * 1e6
            rps = requests_total / seconds
            old = best.get(name)
            best[name] = (
                max(rps, old[0]) if old else rps,
                min(_percentile(lat, 0.5), old[1]) if old else _percentile(lat, 0.5),
                min(_percentile(lat, 0.99), old[2]) if old else _percentile(lat, 0.99),
                min(cpu_us, old[3]) if old else cpu_us,
            )
    base_rps, _, _, base_cpu = best["bare aiohttp (baseline)"]
    print(
        f"{'server':32} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}"
        f" {'req/s vs bare':>13} {'CPU-bound vs bare':>17}"
    )
    for name, (rps, p50, p99, cpu_us) in best.items():
        print(
            f"{name:32} {rps:7.0f} {p50:7.2f} {p99:7.2f} {cpu_us:10.1f}"
            f" {rps / base_rps:12.2f}x {base_cpu / cpu_us:16.2f}x"
        )
    print(
        "(best of the rounds; 'CPU-bound' compares the servers' own CPU time per request,\n"
        " which, unlike wall-clock throughput, does not depend on the machine's other load)"
    )


async def bench_memory(*, tgt: Target, token: str, checkpoints: Sequence[int]) -> None:
    print(f"\n== compute_ctl resident memory ({tgt.kind}, pid {tgt.pid})")
    auth = {"Authorization": f"Bearer {token}"}
    mix = [
        (f"{tgt.internal}/status", None),
        (f"{tgt.external}/status", auth),
        (f"{tgt.internal}/metrics", None),
        (f"{tgt.internal}/metrics.json", None),
        (f"{tgt.internal}/no/such/path", None),
        (f"{tgt.external}/status", {"Authorization": "Bearer not-a-token"}),
    ]
    print(f"{'requests':>9} {'RSS MB':>8}")
    print(f"{0:9d} {tgt.rss_mb():8.1f}")
    done = 0
    samples: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        for checkpoint in checkpoints:
            while done < checkpoint:
                batch = min(256, checkpoint - done)

                async def one(i: int) -> None:
                    url, headers = mix[i % len(mix)]
                    async with session.get(url, headers=headers) as response:
                        await response.read()

                await asyncio.gather(*(one(done + i) for i in range(batch)))
                done += batch
            samples.append(tgt.rss_mb())
            print(f"{done:9d} {samples[-1]:8.1f}")
    if len(samples) >= 2:
        growth = samples[-1] - samples[-2]
        print(
            f"last {checkpoints[-1] - checkpoints[-2]} requests: {growth:+.1f} MB "
            f"(target: final < 80 MB, no growth): "
            f"{'OK' if samples[-1] < 80 and growth < 2 else 'MISSED'}"
        )


def bench_configure(*, rounds: int) -> None:
    if not realcompute.available():
        print("\n== POST /configure: skipped (no compute_ctl.compute.node in this tree)")
        return
    print(f"\n== one-setting change applied, {rounds} rounds each")
    with realcompute.compute_ctl(allow_unauthenticated=True) as compute:
        configure_ms: list[float] = []
        psql_ms: list[float] = []
        for i in range(rounds):
            value = f"{4 + i % 2}MB"
            spec = realcompute.local_spec(
                port=compute.pg_port, settings=[("work_mem", value, "string")]
            )
            started = time.perf_counter()
            response = requests.post(
                f"{compute.internal}/configure",
                json={"spec": spec, "compute_ctl_config": {}},
                timeout=60,
            )
            configure_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"/configure: {response.status_code} {response.text}")
            started = time.perf_counter()
            subprocess.run(
                [
                    str(pgserver.tools().tool("psql")),
                    compute.dsn,
                    "-X",
                    "-q",
                    "-c",
                    f"ALTER SYSTEM SET work_mem = '{value}'",
                    "-c",
                    "SELECT pg_reload_conf()",
                ],
                check=True,
                capture_output=True,
            )
            psql_ms.append((time.perf_counter() - started) * 1000)
    c50, p50 = statistics.median(configure_ms), statistics.median(psql_ms)
    print(f"{'path':44} {'p50 ms':>8} {'max ms':>8}")
    print(f"{'POST /configure (work_mem), until applied':44} {c50:8.1f} {max(configure_ms):8.1f}")
    print(f"{'psql -c ALTER SYSTEM + pg_reload_conf()':44} {p50:8.1f} {max(psql_ms):8.1f}")
    print(f"ratio /configure : psql = {c50 / p50:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_api", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="per /status run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="/status runs per server")
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--configure-rounds", type=int, default=20)
    parser.add_argument("--double", action="store_true", help="use the node double")
    parser.add_argument("--serve", choices=["bare", "double"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--internal-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--jwk", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "bare":
        serve_bare(args.port)
        return 0
    if args.serve == "double":
        serve_double(
            external_port=args.port, internal_port=args.internal_port, jwk=json.loads(args.jwk)
        )
        return 0

    key = jwts.ed25519()
    token = jwts.token(key, {"compute_id": COMPUTE_ID})
    total = args.memory_requests
    checkpoints = sorted({min(2000, total), min(5000, total), total})
    with bare_server() as bare, target(jwts.public_jwk(key), force_double=args.double) as tgt:
        print(f"target: {tgt.kind}")
        asyncio.run(bench_memory(tgt=tgt, token=token, checkpoints=checkpoints))
        asyncio.run(
            bench_status(
                bare=bare,
                tgt=tgt,
                token=token,
                requests_total=args.requests,
                concurrency=args.concurrency,
                rounds=args.rounds,
            )
        )
    bench_configure(rounds=args.configure_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
