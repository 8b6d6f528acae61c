"""Benchmark: catalog apply against raw DDL through ``psql -f``, on fresh clusters.

(a) N roles and M databases from an empty catalog: ``apply_spec`` (observe, plan,
    execute) against a baseline in the same run that executes the same statements,
    rendered to one SQL script (``\\connect`` for per-database work), in one
    ``psql -f`` session on another fresh cluster. Target: ratio <= 1.5.
(b) Re-applying the unchanged spec: statements executed (must be 0) and the median
    time (target < 100 ms).
(c) Scaling: the same apply with a quarter of the roles on fresh clusters; the cost
    ratio against a linear 4x (target <= 1.0, i.e. at most linear).

Every cluster runs with fsync=off (tests/pgserver.py), identically on both sides.

    .venv/bin/python -m bench.catalog [--roles 1000] [--databases 100] [--rounds 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from compute_ctl.compute import spec
from compute_ctl.compute.catalog import apply as catalog_apply
from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver

PRIVILEGED = "neon_superuser"
CONCURRENCY = 10


def make_spec(*, roles: int, databases: int) -> spec.ComputeSpec:
    role_names = [f"role_{i:05d}" for i in range(roles)]
    return spec.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {
                "roles": [
                    {"name": name, "encrypted_password": f"{i:032x}", "options": None}
                    for i, name in enumerate(role_names)
                ],
                "databases": [
                    {"name": f"db_{i:04d}", "owner": role_names[i % roles], "options": None}
                    for i in range(databases)
                ],
            },
        }
    )


@contextlib.contextmanager
def cluster() -> Iterator[pgserver.PgServer]:
    server = pgserver.PgServer.create()
    try:
        yield server
    finally:
        server.stop()


def psql_script(plan: plan_mod.Plan) -> str:
    """The plan's statements, unredacted, as psql would run them (one per line)."""
    lines = []
    current: str | None = None
    for op in plan:
        database = op.database or "postgres"
        if database != current:
            lines.append(f'\\connect "{database}"')
            current = database
        lines.extend(s.as_string(None) + ";" for s in op.statements)
    return "\n".join(lines) + "\n"


def run_psql(server: pgserver.PgServer, script: Path) -> float:
    psql = pgserver.tools().tool("psql")
    started = time.perf_counter()
    subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.dsn(), "-f", script],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def timed_apply(
    server: pgserver.PgServer, compute_spec: spec.ComputeSpec
) -> tuple[float, catalog_apply.ApplyResult]:
    started = time.perf_counter()
    result = await catalog_apply.apply_spec(
        connstr=server.dsn(),
        spec=compute_spec,
        privileged_role=PRIVILEGED,
        concurrency=CONCURRENCY,
    )
    return time.perf_counter() - started, result


async def round_a(
    ours: pgserver.PgServer,
    theirs: pgserver.PgServer,
    compute_spec: spec.ComputeSpec,
    *,
    ours_first: bool,
) -> tuple[float, float, int]:
    """One round of (a) on two fresh clusters: (apply seconds, psql seconds, statements)."""
    if not ours_first:  # a dry run on the empty cluster gives the same plan
        plan = await catalog_apply.plan_spec(
            connstr=ours.dsn(), spec=compute_spec, privileged_role=PRIVILEGED
        )
        baseline_s = await asyncio.to_thread(run_psql, theirs, write_script(plan))
    apply_s, result = await timed_apply(ours, compute_spec)
    if ours_first:
        baseline_s = await asyncio.to_thread(run_psql, theirs, write_script(result.plan))
    return apply_s, baseline_s, result.statements_executed


async def reapply(server: pgserver.PgServer, compute_spec: spec.ComputeSpec, repeat: int) -> None:
    times, counts = [], []
    for _ in range(repeat):
        elapsed, again = await timed_apply(server, compute_spec)
        times.append(elapsed)
        counts.append(again.statements_executed)
    median_ms = statistics.median(times) * 1000
    print("(b) re-apply of the unchanged spec")
    print(f"    statements executed: {max(counts)} (target 0)")
    print(f"    median time: {median_ms:.1f} ms over {repeat} runs (target < 100 ms)")


def write_script(plan: plan_mod.Plan) -> Path:
    script = pgserver.scratch_dir("bench-catalog-") / "baseline.sql"
    script.write_text(psql_script(plan))
    return script


async def main(args: argparse.Namespace) -> None:
    big = make_spec(roles=args.roles, databases=args.databases)
    small_roles = max(1, args.roles // 4)
    small = make_spec(roles=small_roles, databases=0)
    roles_only = make_spec(roles=args.roles, databases=0)

    print(f"(a) {args.roles} roles + {args.databases} databases from an empty catalog")
    ratios = []
    for round_no in range(args.rounds):
        with cluster() as ours, cluster() as theirs:
            # Alternate who goes first: the machine's load drifts between the two runs.
            apply_s, baseline_s, statements = await round_a(
                ours, theirs, big, ours_first=round_no % 2 == 0
            )
            ratios.append(apply_s / baseline_s)
            print(
                f"    round {round_no + 1}: apply_spec {apply_s:.3f} s, "
                f"psql -f {baseline_s:.3f} s ({statements} statements each): "
                f"ratio {ratios[-1]:.2f}"
            )
            if round_no == args.rounds - 1:
                print(f"    median ratio: {statistics.median(ratios):.2f} (target <= 1.5)")
                await reapply(ours, big, args.repeat)

    print(f"(c) scaling: {small_roles} vs {args.roles} roles from an empty catalog")
    with cluster() as a, cluster() as b:
        small_s, _ = await timed_apply(a, small)
        big_s, _ = await timed_apply(b, roles_only)
        noop_small = statistics.median([(await timed_apply(a, small))[0] for _ in range(3)])
        noop_big = statistics.median([(await timed_apply(b, roles_only))[0] for _ in range(3)])
    factor = args.roles / small_roles
    growth = big_s / small_s
    print(f"    apply: {small_s:.3f} s vs {big_s:.3f} s: x{growth:.2f} for x{factor:.0f} roles")
    print(f"    growth vs linear: {big_s / small_s / factor:.2f} (target <= 1.0)")
    print(
        f"    re-apply: {noop_small * 1000:.1f} ms vs {noop_big * 1000:.1f} ms: "
        f"x{noop_big / noop_small:.2f} (growth vs linear {noop_big / noop_small / factor:.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (a), order alternating")
    asyncio.run(main(parser.parse_args()))
