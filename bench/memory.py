"""Resident memory of one pod's Python processes: compute_ctl and the operator sidecar.

On the kmock tier (the emulated API, a real compute_ctl with real PostgreSQL and JWT
keys, the operator as its own process, as in a pod): both processes' RSS after start
(the resource created and reconciled), after 10,000 requests to compute_ctl's external
port (``/status`` with the operator's JWT, ``/metrics``, ``/healthz``, a 404, a refused
token), and after 100 reconfigurations through the operator (a spec patch each, waited
for until ``status.observedGeneration``). Target: at most 120 MB together, and flat
(the second half of the reconfigurations adds less than 2 MB).

    .venv/bin/python -m bench.memory [--requests 10000] [--reconfigurations 100]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import kmock

from bench import operator as operator_bench
from tests.operator import emulator, harness

TARGET_MB = 120.0
FLAT_MB = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def _requests(session: aiohttp.ClientSession, compute: harness.Compute, total: int) -> None:
    auth = compute.auth()
    mix = [
        ("/status", auth),
        ("/status", auth),
        ("/metrics", {}),
        ("/healthz", {}),
        ("/no/such/path", {}),
        ("/status", {"Authorization": "Bearer not-a-token"}),
    ]
    done = 0
    while done < total:
        batch = min(64, total - done)

        async def one(i: int) -> None:
            path, headers = mix[i % len(mix)]
            async with session.get(f"{compute.url}{path}", headers=headers) as response:
                await response.read()

        await asyncio.gather(*(one(done + i) for i in range(batch)))
        done += batch


async def main_async(*, requests: int, reconfigurations: int) -> None:
    rows: list[tuple[str, float, float]] = []
    async with emulator.Emulator() as api_server, kmock.Server(api_server):
        emulator.declare(api_server)
        async with aiohttp.ClientSession() as session:
            api = harness.Api(api_server, session)
            with harness.Compute.running() as compute:
                await compute.wait_listening(session)
                async with harness.Operator.running(
                    api_url=api.base,
                    compute_url=compute.url,
                    key_file=compute.keys.private,
                    workdir=compute.workdir,
                    resync=300.0,
                    log_level="INFO",
                ) as operator:
                    pids = compute.proc.pid, operator.proc.pid

                    def sample(label: str) -> None:
                        rows.append((label, rss_mb(pids[0]), rss_mb(pids[1])))

                    await api.create(operator_bench._spec(compute, 0))
                    await api.wait_for(operator_bench._reconciled(1), what="gen 1", timeout=120)
                    sample("after start")
                    await _requests(session, compute, requests)
                    sample(f"after {requests:,} requests")
                    half = reconfigurations // 2
                    for index in range(1, reconfigurations + 1):
                        generation = await api.replace_spec(operator_bench._spec(compute, index))
                        await api.wait_for(
                            operator_bench._reconciled(generation), what=f"gen {generation}"
                        )
                        if index == half:
                            sample(f"after {half} reconfigurations")
                    sample(f"after {reconfigurations} reconfigurations")

    print("resident memory (VmRSS, MB) of one pod's Python processes, kmock tier")
    print(f"{'':34} {'compute_ctl':>11} {'operator':>9} {'together':>9}")
    for label, compute_mb, operator_mb in rows:
        print(f"{label:34} {compute_mb:11.1f} {operator_mb:9.1f} {compute_mb + operator_mb:9.1f}")
    final = rows[-1][1] + rows[-1][2]
    growth = final - (rows[-2][1] + rows[-2][2])
    verdict = "OK" if final <= TARGET_MB and growth < FLAT_MB else "MISSED"
    print(
        f"target: together <= {TARGET_MB:g} MB and the last {reconfigurations - half} "
        f"reconfigurations add < {FLAT_MB:g} MB: {final:.1f} MB, {growth:+.1f} MB: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--reconfigurations", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main_async(requests=args.requests, reconfigurations=args.reconfigurations))


if __name__ == "__main__":
    main()
