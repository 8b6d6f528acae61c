"""How fast the operator turns a spec patch into ``status.observedGeneration``, and its memory.

On the kmock tier (the emulated API, a real compute_ctl with real PostgreSQL, the
operator as its own process): create a ``ComputeSpec``, then patch its spec N times (a
reloadable setting changes each time) and time each patch until the status reports that
generation reconciled. The baseline, measured in the same run after the operator stops,
is the same N changes sent straight to compute_ctl's ``POST /configure`` on the external
port with the operator's JWT (the door the operator uses): the ratio is
the operator's overhead over the compute's own reconfiguration. Also reports the
operator's resident memory (current and peak) after the changes.

    .venv/bin/python -m bench.operator [--changes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import kmock

from tests.operator import emulator, harness


def _spec(compute: harness.Compute, index: int) -> dict[str, Any]:
    return harness.compute_spec(port=compute.pg_port, settings={"work_mem": f"{4096 + index}kB"})


def _reconciled(generation: int) -> harness.Predicate:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get("observedGeneration") == generation and (
            harness.condition(obj, "Reconciled").get("status") == "True"
        )

    return check


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _memory_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else "0"
    return int(fields["VmRSS"]), int(fields["VmHWM"])


async def _through_operator(
    api: harness.Api, compute: harness.Compute, changes: int
) -> tuple[list[float], tuple[int, int]]:
    async with harness.Operator.running(
        api_url=api.base,
        compute_url=compute.url,
        key_file=compute.keys.private,
        workdir=compute.workdir,
        resync=300.0,
        log_level="INFO",
    ) as operator:
        first = _spec(compute, 0)
        await api.create(first)
        await api.wait_for(_reconciled(1), what="generation 1 reconciled", timeout=120)
        samples = []
        for index in range(1, changes + 1):
            spec = _spec(compute, index)
            started = time.perf_counter()
            generation = await api.replace_spec(spec)
            await api.wait_for(_reconciled(generation), what=f"generation {generation}")
            samples.append(time.perf_counter() - started)
        memory = _memory_kib(operator.proc.pid)
    return samples, memory


async def _direct(
    session: aiohttp.ClientSession, compute: harness.Compute, changes: int
) -> list[float]:
    samples = []
    for index in range(changes + 1, 2 * changes + 1):
        body = {"spec": _spec(compute, index)}
        started = time.perf_counter()
        url = f"{compute.url}/configure"
        async with session.post(url, json=body, headers=compute.auth()) as response:
            assert response.status == 200, await response.text()
        samples.append(time.perf_counter() - started)
    return samples


async def main_async(changes: int) -> None:
    async with emulator.Emulator() as api_server, kmock.Server(api_server):
        emulator.declare(api_server)
        async with aiohttp.ClientSession() as session:
            api = harness.Api(api_server, session)
            with harness.Compute.running() as compute:
                await compute.wait_listening(session)
                operated, (rss, peak) = await _through_operator(api, compute, changes)
                direct = await _direct(session, compute, changes)

    def row(name: str, samples: list[float]) -> str:
        p50, p99 = _percentile(samples, 0.5), _percentile(samples, 0.99)
        return f"{name:<34} p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms"

    print(f"{changes} spec changes (a reloadable setting each), kmock tier, real compute_ctl")
    print(row("patch -> status.observedGeneration", operated))
    print(row("baseline: direct POST /configure", direct))
    ratio50 = statistics.median(operated) / statistics.median(direct)
    ratio99 = _percentile(operated, 0.99) / _percentile(direct, 0.99)
    print(f"{'ratio operator/direct':<34} p50 {ratio50:8.2f} x    p99 {ratio99:8.2f} x")
    print(f"operator resident memory: {rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.changes))


if __name__ == "__main__":
    main()
