"""Benchmark of the HTTP API: /status throughput and latency, /configure round trip, memory.

Run: ``.venv/bin/python -m bench.http_api`` (about a minute; ``--help`` for bigger runs).

1. ``GET /status`` with 64 concurrent clients: requests per second, p50 and p99, for a bare
   aiohttp app serving the same body (the baseline, measured in the same run) and for
   compute_ctl's internal port (no auth) and external port (JWT). Target: >= 0.8x bare,
   in CPU time per request of the server process (raw, and without the CPU the process
   burns with no load, measured first: compute_ctl's timers and activity monitor).
2. ``POST /configure`` changing one setting (work_mem) and waiting for it to be applied,
   against ``psql -c "ALTER SYSTEM SET work_mem ..." -c "SELECT pg_reload_conf()"``. The
   client keeps its HTTP connection between requests, as a control plane's does; ``psql``
   is a new process and a new PostgreSQL session each time, which is the baseline's cost.
3. compute_ctl's resident memory after 2,000 / 5,000 / 10,000 requests (status, metrics,
   404s, auth failures). Target: < 80 MB and not growing.

The servers run in their own processes so the client does not share their GIL. The target
is a real compute_ctl; ``--double`` serves the HTTP layer over the node test double instead
(sections 1 and 3 only).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Sequence

import aiohttp
import requests

from bench import http_servers
from tests import pgserver
from tests.support import compute_process, jwts, specs

COMPUTE_ID = compute_process.COMPUTE_ID


async def idle_cpu_rate(pid: int, *, seconds: float) -> float:
    """CPU seconds per second a process burns with no request to serve (its timers,
    compute_ctl's activity monitor and loops)."""
    before, started = http_servers.cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return (http_servers.cpu_seconds(pid) - before) / (time.perf_counter() - started)


async def bench_status(
    *,
    bare: tuple[str, int],
    tgt: http_servers.Target,
    token: str,
    requests_total: int,
    concurrency: int,
    rounds: int,
    idle_seconds: float,
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
        await http_servers.load(url, requests_total=500, concurrency=concurrency, headers=headers)
    idle = {pid: await idle_cpu_rate(pid, seconds=idle_seconds) for pid in (bare_pid, tgt.pid)}
    # Per round: (req/s, p50, p99, CPU us/request, the same without the idle rate).
    results: dict[str, list[tuple[float, float, float, float, float]]] = {n: [] for n in runs}
    for _ in range(rounds):  # interleaved: the machine is shared
        for name, (url, headers, pid) in runs.items():
            cpu_before = http_servers.cpu_seconds(pid)
            seconds, lat = await http_servers.load(
                url, requests_total=requests_total, concurrency=concurrency, headers=headers
            )
            cpu = http_servers.cpu_seconds(pid) - cpu_before
            results[name].append(
                (
                    requests_total / seconds,
                    http_servers.percentile(lat, 0.5),
                    http_servers.percentile(lat, 0.99),
                    cpu / requests_total * 1e6,
                    (cpu - idle[pid] * seconds) / requests_total * 1e6,
                )
            )
    base = results["bare aiohttp (baseline)"]
    print(
        f"{'server':32} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}"
        f" {'req/s vs bare':>13} {'CPU-bound vs bare':>17} {'idle-adjusted':>13}"
        f"  per round (median, range)"
    )
    for name, rows in results.items():
        rps, cpu_us, busy_us = (
            max(r[0] for r in rows),
            min(r[3] for r in rows),
            min(r[4] for r in rows),
        )
        paired = sorted(b[3] / r[3] for b, r in zip(base, rows, strict=True))
        print(
            f"{name:32} {rps:7.0f} {min(r[1] for r in rows):7.2f} {min(r[2] for r in rows):7.2f}"
            f" {cpu_us:10.1f} {rps / max(r[0] for r in base):12.2f}x"
            f" {min(r[3] for r in base) / cpu_us:16.2f}x"
            f" {min(r[4] for r in base) / busy_us:12.2f}x"
            f"  {statistics.median(paired):.2f}x, {paired[0]:.2f}-{paired[-1]:.2f}"
        )
    print(
        f"CPU with no load, over {idle_seconds:.0f} s: bare {idle[bare_pid] * 1000:.2f} ms/s,"
        f" compute_ctl {idle[tgt.pid] * 1000:.2f} ms/s ('idle-adjusted' subtracts it)"
    )
    print(
        "(best of the rounds; 'CPU-bound' compares the servers' own CPU time per request,\n"
        " which, unlike wall-clock throughput, does not depend on the machine's other load;\n"
        " 'per round' pairs each run with the baseline run just before it;\n"
        " the bare app serves the very bytes compute_ctl's /status answered at the start)"
    )


async def bench_memory(*, tgt: http_servers.Target, token: str, checkpoints: Sequence[int]) -> None:
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


def _phase_sums(metrics_url: str) -> dict[str, float]:
    """``compute_ctl_reconfigure_phase_seconds_sum`` by phase, from ``/metrics``."""
    sums: dict[str, float] = {}
    prefix = 'compute_ctl_reconfigure_phase_seconds_sum{phase="'
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith(prefix):
            labels, value = line[len(prefix) :].rsplit(" ", 1)
            sums[labels.split('"', 1)[0]] = float(value)
    return sums


def bench_configure(*, rounds: int) -> None:
    print(f"\n== one-setting change applied, {rounds} rounds each")
    with (
        compute_process.running_compute(allow_unauthenticated=True) as compute,
        requests.Session() as http,  # one kept connection, as a control plane keeps it
    ):
        configure_ms: list[float] = []
        psql_ms: list[float] = []
        phases_before = _phase_sums(f"{compute.internal}/metrics")
        for i in range(rounds):
            value = f"{4 + i % 2}MB"
            spec = specs.local_spec(port=compute.pg_port, settings=[("work_mem", value, "string")])
            started = time.perf_counter()
            response = http.post(
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
        phases_after = _phase_sums(f"{compute.internal}/metrics")
    c50, p50 = statistics.median(configure_ms), statistics.median(psql_ms)
    phase_ms = {
        name: (seconds - phases_before.get(name, 0.0)) / rounds * 1000
        for name, seconds in phases_after.items()
    }
    print("configurator phases, mean ms per /configure (compute_ctl_reconfigure_phase_seconds):")
    for name, ms in phase_ms.items():
        print(f"  {name:42} {ms:8.1f}")
    mean = statistics.fmean(configure_ms)
    print(
        f"  {'outside the configurator (HTTP, admission)':42} {mean - sum(phase_ms.values()):8.1f}"
    )
    print(f"{'path':44} {'p50 ms':>8} {'max ms':>8}")
    print(f"{'POST /configure (work_mem), until applied':44} {c50:8.1f} {max(configure_ms):8.1f}")
    print(f"{'psql -c ALTER SYSTEM + pg_reload_conf()':44} {p50:8.1f} {max(psql_ms):8.1f}")
    print(f"ratio /configure : psql = {c50 / p50:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_api", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="per /status run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="/status runs per server")
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="idle CPU sampled before /status"
    )
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--configure-rounds", type=int, default=20)
    parser.add_argument("--double", action="store_true", help="use the node double")
    parser.add_argument(
        "--only", choices=["status", "memory", "configure"], help="run one section only"
    )
    args = parser.parse_args(argv)
    if args.only == "configure":
        bench_configure(rounds=args.configure_rounds)
        return 0

    key = jwts.ed25519()
    token = jwts.token(key, {"compute_id": COMPUTE_ID})
    total = args.memory_requests
    checkpoints = sorted({min(2000, total), min(5000, total), total})
    with http_servers.target(jwts.public_jwk(key), force_double=args.double) as tgt:
        print(f"target: {tgt.kind}")
        if args.only in (None, "memory"):
            asyncio.run(bench_memory(tgt=tgt, token=token, checkpoints=checkpoints))
        if args.only in (None, "status"):
            body = http_servers.status_body(f"{tgt.internal}/status")
            with http_servers.bare_server(body) as bare:
                asyncio.run(
                    bench_status(
                        bare=bare,
                        tgt=tgt,
                        token=token,
                        requests_total=args.requests,
                        concurrency=args.concurrency,
                        rounds=args.rounds,
                        idle_seconds=args.idle_seconds,
                    )
                )
    if not args.double and args.only is None:
        bench_configure(rounds=args.configure_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
