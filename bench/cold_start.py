"""Cold start to ``running`` with a small spec, against the raw tools in the same run.

    .venv/bin/python -m bench.cold_start [--runs 5] [--roles 1]

Three measurements per run, interleaved so machine noise hits each alike:

- ``process``: ``compute_ctl -c config.json`` exec'd until ``/status`` says ``running``
  (Python start-up, PGDATA wipe, initdb, postgresql.conf, postgres start, catalog apply);
- ``pooled``: a compute_ctl already waiting in ``empty`` (Neon's pooled computes; its
  prewarm, a spare initdb, has finished) gets the spec by ``POST /configure``, until the 200;
- ``baseline``: the same work with the raw tools: ``initdb`` (same flags), the same
  postgresql.conf and pg_hba.conf, ``pg_ctl start -w``, ``psql -f`` of SQL equivalent to
  the catalog apply for this spec (Neon's phases for a role and a database).

Prints each median, the ratios against the baseline (target: at most 1.15x; the paired
ratio is the median of per-run ratios), and the phase breakdown of compute_ctl (Neon's
``/metrics.json`` timings) and of the baseline. On a busy machine the ``process`` ratio
grows: compute_ctl's own start-up (Python imports) overlaps initdb and needs a free core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compute_ctl.compute import pgconf
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers, process

SUPERUSER = "cloud_admin"


def _spec(port: int, roles: int) -> dict[str, Any]:
    names = [f"app_role_{i}" for i in range(roles)]
    return helpers.spec_json(port=port, roles=names, databases=[("appdb", names[0])])


def _baseline_sql(spec: spec_mod.ComputeSpec) -> str:
    """What the catalog apply does for this spec (Neon's phases), as one psql script."""
    lines = [
        "\\set ON_ERROR_STOP on",
        "CREATE ROLE neon_superuser CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS"
        " IN ROLE pg_read_all_data, pg_write_all_data;",
    ]
    for role in spec.cluster.roles:
        lines.append(
            f'CREATE ROLE "{role.name}" INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION'
            f" IN ROLE neon_superuser LOGIN PASSWORD '{role.encrypted_password}';"
        )
    for db in spec.cluster.databases:
        lines.append(f'CREATE DATABASE "{db.name}" OWNER "{db.owner}";')
        lines.append(f'GRANT ALL PRIVILEGES ON DATABASE "{db.name}" TO neon_superuser;')
    lines.append("CREATE SCHEMA IF NOT EXISTS neon;")
    for db in spec.cluster.databases:
        lines += [
            f'\\c "{db.name}"',
            f'ALTER SCHEMA public OWNER TO "{db.owner}";',
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO neon_superuser"
            " WITH GRANT OPTION;",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO neon_superuser"
            " WITH GRANT OPTION;",
        ]
    return "\n".join(lines) + "\n"


async def _baseline(base: Path, spec: spec_mod.ComputeSpec, port: int) -> dict[str, float]:
    """initdb; conf; pg_ctl start -w; psql -f. Seconds per phase."""
    tools = pgserver.tools()
    pgdata = base / "pgdata"
    script = base / "apply.sql"
    script.write_text(_baseline_sql(spec))
    tools.user.chown(script)
    phases: dict[str, float] = {}
    started = time.monotonic()
    await tools.run(
        [
            tools.tool("initdb"),
            "-D",
            pgdata,
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth=trust",
            "--no-instructions",
            "--no-sync",
        ]
    )
    context = pgconf.ConfContext(local_port=port, socket_dir=str(pgdata))
    (pgdata / "postgresql.conf").write_text(pgconf.render_postgresql_conf(spec, context))
    (pgdata / "pg_hba.conf").write_text(pgconf.render_hba(superuser=SUPERUSER))
    phases["initdb+conf"] = time.monotonic() - started
    mark = time.monotonic()
    await tools.run(
        [tools.tool("pg_ctl"), "start", "-w", "-D", pgdata, "-l", base / "pg.log", "-o", ""]
    )
    phases["pg_ctl start -w"] = time.monotonic() - mark
    mark = time.monotonic()
    await tools.run(
        [
            tools.tool("psql"),
            "-X",
            "-q",
            "-f",
            script,
            f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres",
        ]
    )
    phases["psql -f"] = time.monotonic() - mark
    phases["total"] = time.monotonic() - started
    await tools.run([tools.tool("pg_ctl"), "stop", "-m", "immediate", "-D", pgdata])
    return phases


def _get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.HTTPError):
        return None


def _timings(proc: process.ComputeProcess) -> dict[str, int]:
    """Neon's /metrics.json timings; from the log line if this build's API lacks the route."""
    metrics = _get(proc.internal_port, "/metrics.json")
    if isinstance(metrics, dict):
        return {k: int(v) for k, v in metrics.items() if isinstance(v, int | float)}
    match = re.search(r"compute running: (\{.*\})", proc.log())
    return json.loads(match.group(1).replace("'", '"')) if match else {}


def _wait_status(proc: process.ComputeProcess, wanted: str, *, poll: float = 0.005) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = _get(proc.internal_port, "/status")
        if status is not None and status.get("status") == wanted:
            return
        if proc.proc.poll() is not None:
            raise RuntimeError(f"compute_ctl exited:\n{proc.log()}")
        time.sleep(poll)
    raise RuntimeError(f"compute_ctl not {wanted}:\n{proc.log()}")


def _finish(proc: process.ComputeProcess) -> None:
    proc.request("POST", "/terminate?mode=immediate")
    proc.wait_exit(timeout=30)


def _process_run(base: Path, spec: dict[str, Any], port: int) -> tuple[float, dict[str, int]]:
    config = base / "config.json"
    config.write_text(json.dumps({"spec": spec}))
    started = time.monotonic()
    proc = process.ComputeProcess(pgdata=base / "pgdata", port=port, config=config)
    try:
        _wait_status(proc, "running")
        elapsed = time.monotonic() - started
        return elapsed, _timings(proc)
    finally:
        _finish(proc)


def _pooled_run(base: Path, spec: dict[str, Any], port: int) -> tuple[float, dict[str, int]]:
    config = base / "config.json"
    config.write_text(json.dumps({"spec": None}))
    proc = process.ComputeProcess(pgdata=base / "pgdata", port=port, config=config)
    try:
        _wait_status(proc, "empty", poll=0.02)
        # A pooled compute has sat idle a while: let its prewarm (a spare initdb) finish.
        deadline = time.monotonic() + 60
        while "prewarmed a PGDATA" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        code, body = proc.request("POST", "/configure", {"spec": spec})
        elapsed = time.monotonic() - started
        if code != 200:
            raise RuntimeError(f"/configure answered {code}: {body}\n{proc.log()}")
        return elapsed, _timings(proc)
    finally:
        _finish(proc)


def _median_phases(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: statistics.median(float(r[k]) for r in runs) for k in keys}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cold_start", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--roles", type=int, default=1, help="roles in the spec")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {"process": [], "pooled": [], "baseline": []}
    timings: dict[str, list[dict[str, int]]] = {"process": [], "pooled": []}
    baseline_phases: list[dict[str, float]] = []
    for run in range(args.runs):
        for kind in ("baseline", "process", "pooled"):
            base = pgserver.scratch_dir(f"bench-{kind}-")
            port = pgserver.free_port()
            raw = _spec(port, args.roles)
            try:
                if kind == "baseline":
                    spec = spec_mod.ComputeSpec.model_validate(raw)
                    phases = asyncio.run(_baseline(base, spec, port))
                    results[kind].append(phases["total"])
                    baseline_phases.append(phases)
                else:
                    runner = _process_run if kind == "process" else _pooled_run
                    elapsed, t = runner(base, raw, port)
                    results[kind].append(elapsed)
                    timings[kind].append(t)
            finally:
                shutil.rmtree(base, ignore_errors=True)
        print(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in results.items()),
            file=sys.stderr,
        )
    base_median = statistics.median(results["baseline"])
    print(f"cold start to running, small spec ({args.roles} role(s), 1 database), {args.runs} runs")
    for kind, values in results.items():
        median = statistics.median(values)
        # Also the median of per-run ratios: each run's three starts ran back to back, so
        # the paired ratio cancels most of a shared machine's drifting load.
        paired = statistics.median(v / b for v, b in zip(values, results["baseline"], strict=True))
        print(
            f"  {kind:<9} median {median * 1000:7.0f} ms   ratio {median / base_median:.2f}x"
            f"   paired ratio {paired:.2f}x"
        )
    print(
        "  baseline phases (median ms): "
        + ", ".join(f"{k} {v * 1000:.0f}" for k, v in _median_phases(baseline_phases).items())
    )
    for kind in ("process", "pooled"):
        phases = _median_phases(timings[kind]) if timings[kind] else {}
        shown = ("wait_for_spec_ms", "start_postgres_ms", "config_ms", "total_startup_ms")
        print(
            f"  {kind} timings (median): "
            + ", ".join(f"{k} {phases[k]:.0f}" for k in shown if k in phases)
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
