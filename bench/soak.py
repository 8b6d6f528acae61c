"""Soak: a real compute_ctl under mixed load and scheduled faults for a stated time.

Run: ``.venv/bin/python -m bench.soak`` (``--seconds 60`` by default, then up to
``--settle`` seconds to converge; ``--help``).

Load, against one compute_ctl on loopback (local mode, its own PostgreSQL), every loop
bounded by the deadline and every request by a client timeout:
- a configure storm: ``--configurers`` clients, each ``POST /configure`` of a fresh spec
  (a new ``work_mem``, one of five roles) as fast as answers come (412 while another is
  pending is the contract);
- status polls (``GET /status``, ``GET /healthz``) from two clients;
- a ``/readyz`` flood: 20 concurrent tokenless probes at a time;
- a body flood: an almost-8 MiB spec that admission refuses, every half second.

Faults, one every ``--fault-every`` seconds, alternating:
- ``SIGSTOP`` of the postmaster for ``--stop-seconds``, then ``SIGCONT``;
- ``SIGKILL`` of one client backend (the postmaster then restarts every backend).

Reported:
- stuck computes: 1 if, ``--settle`` seconds after the load stops, the compute is not
  ``running`` with its desired spec applied (target 0);
- lost accepted specs: a ``/configure`` answered 200 whose spec is neither applied at the
  end nor followed by another accepted spec (target 0);
- 5xx answers other than a fault's own (a 500 from ``/configure`` or a 503 from
  ``/readyz`` while a fault lasts, plus ``--grace`` seconds);
- compute_ctl's resident memory: after warm-up, at the end, and the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from compute_ctl.compute import spec as spec_mod
from tests.support import compute_process, specs

_SCRAM = (
    "SCRAM-SHA-256$4096:Y29tcHV0ZS1jdGwtZGVtbw==$CaOC+hJ3k1xAWyQF05CfkNt2kFf6eIoV1oIhsTdhGI4="
    ":sSBzp0QceU7a6HBqdDCY8PEQG68JsvtK4PHfTryBHbM="
)
_BACKGROUND = ("checkpointer", "background writer", "walwriter", "launcher", "startup")


@dataclasses.dataclass
class Answer:
    route: str
    status: int  # 0: no answer (timeout, connection error)
    started: float
    ended: float
    spec_hash: str = ""
    reason: str = ""  # the error of a 5xx, clipped


@dataclasses.dataclass
class Soak:
    compute: compute_process.ComputeProcess
    deadline: float
    answers: list[Answer] = dataclasses.field(default_factory=list)
    faults: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)
    counter: int = 0

    @property
    def base(self) -> str:
        return self.compute.external  # unauthenticated here: the internal port may be narrower

    def live(self) -> bool:
        return time.monotonic() < self.deadline

    async def request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        route: str,
        *,
        body: bytes | None = None,
        spec_hash: str = "",
        timeout: float = 60.0,
    ) -> Answer:
        started = time.monotonic()
        status = 0
        text = ""
        headers = {"Content-Type": "application/json"} if body is not None else None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.request(
                method,
                f"{self.base}{route}",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                text = await r.text(errors="replace")
                status = r.status
        answer = Answer(route.split("?")[0], status, started, time.monotonic(), spec_hash)
        if status >= 500:
            answer.reason = text[:200]
        self.answers.append(answer)
        return answer

    def next_spec(self) -> tuple[bytes, str]:
        self.counter += 1
        n = self.counter
        spec = specs.local_spec(
            port=self.compute.pg_port, settings=[("work_mem", f"{1024 + n}kB", "string")]
        )
        spec["cluster"]["roles"] = [
            {"name": f"soak_{n % 5}", "encrypted_password": _SCRAM, "options": None}
        ]
        digest = spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(spec))
        return json.dumps({"spec": spec}).encode(), digest


async def _configurer(soak: Soak, session: aiohttp.ClientSession) -> None:
    while soak.live():
        body, digest = soak.next_spec()
        answer = await soak.request(session, "POST", "/configure", body=body, spec_hash=digest)
        if answer.status != 200:
            await asyncio.sleep(0.1)  # 412 while another is pending: retry soon, not hot


async def _poller(soak: Soak, session: aiohttp.ClientSession) -> None:
    while soak.live():
        await soak.request(session, "GET", "/status", timeout=10)
        await soak.request(session, "GET", "/healthz", timeout=10)
        await asyncio.sleep(0.02)


async def _readyz_flood(soak: Soak, session: aiohttp.ClientSession) -> None:
    while soak.live():
        await asyncio.gather(
            *(soak.request(session, "GET", "/readyz", timeout=10) for _ in range(20))
        )
        await asyncio.sleep(0.2)


async def _body_flood(soak: Soak, session: aiohttp.ClientSession) -> None:
    role = {"name": "r000000", "encrypted_password": _SCRAM, "options": None}
    roles = [{**role, "name": f"r{i:06d}"} for i in range(7 * 1024 * 1024 // 200)]
    bad = {"format_version": 1.0, "cluster": {"roles": roles}, "suspend_timeout_seconds": "x"}
    body = json.dumps({"spec": bad}).encode()
    while soak.live():
        await soak.request(session, "POST", "/configure?dry_run=true", body=body, timeout=60)
        await asyncio.sleep(0.5)


def _postmaster_pid(compute: compute_process.ComputeProcess) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((compute.base / "pgdata" / "postmaster.pid").read_text().split()[0])
    return None


def _client_backends(postmaster: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            if ppid != postmaster:
                continue
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not any(word in cmdline for word in _BACKGROUND):
                found.append(int(stat.parent.name))
    return found


async def _faults(soak: Soak, *, every: float, stop_seconds: float) -> None:
    kinds = collections.deque(["sigstop", "kill-backend"])
    await asyncio.sleep(min(every, 5.0))
    while time.monotonic() + stop_seconds < soak.deadline:
        kind = kinds[0]
        kinds.rotate(-1)
        postmaster = _postmaster_pid(soak.compute)
        started = time.monotonic()
        if postmaster is None:
            soak.faults.append(("no-postmaster", started, started))
        elif kind == "sigstop":
            try:
                os.kill(postmaster, signal.SIGSTOP)
                await asyncio.sleep(stop_seconds)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(postmaster, signal.SIGCONT)
            soak.faults.append((kind, started, time.monotonic()))
        else:
            backends = _client_backends(postmaster)
            if backends:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(backends[0], signal.SIGKILL)
            soak.faults.append((kind if backends else "no-backend", started, time.monotonic()))
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _rss_sampler(soak: Soak, samples: list[float]) -> None:
    while soak.live():
        samples.append(_rss_mb(soak.compute.proc.pid))
        await asyncio.sleep(1.0)


async def _settle(soak: Soak, *, seconds: float) -> dict[str, Any]:
    """The compute's status once it is running with desired == applied, or the last seen."""
    deadline = time.monotonic() + seconds
    last: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(
                    f"{soak.base}/status", timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    last = await r.json()
            if last.get("status") == "running" and last.get("desired_spec_hash") == last.get(
                "applied_spec_hash"
            ):
                break
            await asyncio.sleep(0.5)
    return last


def _in_fault(soak: Soak, answer: Answer, grace: float) -> bool:
    return any(
        answer.ended >= start and answer.started <= end + grace for _, start, end in soak.faults
    )


def _report(soak: Soak, final: dict[str, Any], rss: list[float], grace: float) -> int:
    by_route: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for a in soak.answers:
        by_route[a.route][a.status] += 1
    fault_answers = {("/configure", 500), ("/readyz", 503)}
    # Not ready while a configuration runs is /readyz's contract, not a failure.
    designed = [a for a in soak.answers if a.route == "/readyz" and "compute status is" in a.reason]
    other_5xx = [
        a
        for a in soak.answers
        if a.status >= 500
        and a not in designed
        and not ((a.route, a.status) in fault_answers and _in_fault(soak, a, grace))
    ]
    no_answer = [a for a in soak.answers if a.status == 0]
    stuck = (
        0
        if final.get("status") == "running"
        and (final.get("desired_spec_hash") == final.get("applied_spec_hash"))
        else 1
    )
    accepted = sorted(
        (
            a
            for a in soak.answers
            if a.route == "/configure" and a.spec_hash and a.status in (200, 500)
        ),
        key=lambda a: a.ended,
    )
    # Accepted specs supersede each other (one is pending at a time): only the last one
    # accepted must be the one applied in the end.
    last = accepted[-1] if accepted else None
    lost = (
        1 if last and last.status == 200 and last.spec_hash != final.get("applied_spec_hash") else 0
    )
    print("\n== answers by route (status: count; 0 = no answer)")
    for route, counts in sorted(by_route.items()):
        print(f"  {route:12} " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    print("\n== faults")
    kinds = collections.Counter(kind for kind, _, _ in soak.faults)
    print("  " + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))
    print("\n== figures")
    print(f"  stuck computes:         {stuck} (target 0); final status {final.get('status')!r}")
    if final.get("error"):
        print(f"    last error: {str(final['error'])[:200]}")
    print(f"  lost accepted specs:    {lost} (target 0); {len(accepted)} accepted")
    print(f"  5xx not a fault's own:  {len(other_5xx)}", end="")
    print(f" (and {len(designed)} /readyz 503 'not ready: compute status is ...', by design)")
    for a in other_5xx[:5]:
        print(f"    {a.route} {a.status} at +{a.ended - soak.answers[0].started:.1f} s: {a.reason}")
    print(f"  requests without answer: {len(no_answer)}")
    if rss:
        quarters = ", ".join(f"{rss[len(rss) * q // 4]:.0f}" for q in (1, 2, 3))
        print(
            f"  compute_ctl RSS: {rss[0]:.1f} MB at the start, {quarters} MB at each quarter, "
            f"{rss[-1]:.1f} MB at the end (+{rss[-1] - rss[0]:.1f}), peak {max(rss):.1f} MB"
        )
    return 0 if stuck == 0 and lost == 0 and not other_5xx else 1


async def _run(args: argparse.Namespace) -> int:
    with compute_process.running_compute(allow_unauthenticated=True) as compute:
        print(f"compute_ctl pid {compute.proc.pid}, PGDATA {compute.base / 'pgdata'}")
        soak = Soak(compute=compute, deadline=time.monotonic() + args.seconds)
        rss: list[float] = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [
                *(_configurer(soak, session) for _ in range(args.configurers)),
                _poller(soak, session),
                _poller(soak, session),
                _readyz_flood(soak, session),
                _body_flood(soak, session),
                _faults(soak, every=args.fault_every, stop_seconds=args.stop_seconds),
                _rss_sampler(soak, rss),
            ]
            # Every loop ends at the deadline; the outer bound covers a request in flight.
            await asyncio.wait_for(asyncio.gather(*tasks), args.seconds + 90)
        final = await _settle(soak, seconds=args.settle)
        return _report(soak, final, rss, args.grace)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--settle", type=float, default=60.0, help="convergence deadline")
    parser.add_argument("--configurers", type=int, default=3)
    parser.add_argument("--fault-every", type=float, default=12.0)
    parser.add_argument("--stop-seconds", type=float, default=3.0, help="SIGSTOP length")
    parser.add_argument("--grace", type=float, default=5.0, help="after a fault, seconds")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
