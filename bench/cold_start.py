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
``/metrics.json`` timings, and the CPU compute_ctl itself used until ``running``) and of
the baseline. On a busy machine the ``process`` ratio grows: compute_ctl's own start-up
(Python imports) overlaps initdb and needs a free core; its CPU figure does not depend on
the load.

compute_ctl runs as installed: with its modules' bytecode compiled (into a cache of this
run, warmed before the first start), as ``pip install`` leaves it. ``--no-bytecode`` keeps
the environment's setting instead (a development tree with ``PYTHONDONTWRITEBYTECODE``
recompiles every module of compute_ctl on every start). ``/status`` is polled every 5 ms
over one kept-alive connection, so the observer costs the observed little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from compute_ctl.compute import pgconf
from compute_ctl.compute import spec as spec_mod
from tests import pgserver, support
from tests.support import compute_process as process
from tests.support import specs

SUPERUSER = "cloud_admin"


def _spec(port: int, roles: int) -> dict[str, Any]:
    names = [f"app_role_{i}" for i in range(roles)]
    return specs.local_spec(
        port=port, roles=names, databases=[("appdb", names[0])], password="bench password"
    )


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
            f"host={pgdata} port={port} user={SUPERUSER} dbname=postgres",  # trusted there only
        ]
    )
    phases["psql -f"] = time.monotonic() - mark
    phases["total"] = time.monotonic() - started
    await tools.run([tools.tool("pg_ctl"), "stop", "-m", "immediate", "-D", pgdata])
    return phases


class _Poller:
    """GET one path again and again over a kept-alive connection (reopened on failure)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> Any:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        try:
            self._conn.request("GET", path)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None
        return json.loads(body) if response.status == 200 else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def _bytecode_env(enabled: bool) -> Iterator[Mapping[str, str]]:
    """The environment compute_ctl runs with: its bytecode in a cache of this run, warmed
    by importing its start path once (nothing timed), or the environment as it is."""
    if not enabled:
        yield {}
        return
    cache = pgserver.scratch_dir("bench-pycache-")
    env = {"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": ""}
    try:
        start_path = ("cli", "node", "http.server")
        warm = "import " + ", ".join(f"compute_ctl.compute.{m}" for m in start_path)
        subprocess.run(
            [sys.executable, "-c", warm],
            env={**os.environ, **env},
            cwd=support.REPO,
            check=True,
        )
        yield env
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _cpu_ms(pid: int) -> int:
    """User + system CPU of one process so far (not its children: initdb, postgres)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def _timings(proc: process.ComputeProcess) -> dict[str, int]:
    """Neon's /metrics.json timings."""
    code, metrics = proc.request("GET", "/metrics.json")
    if code != 200 or not isinstance(metrics, dict):
        raise RuntimeError(f"/metrics.json answered {code}: {metrics}")
    return {k: int(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _wait_status(proc: process.ComputeProcess, wanted: str, *, poll: float = 0.005) -> None:
    poller = _Poller(proc.internal_port)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            status = poller.get("/status")
            if status is not None and status.get("status") == wanted:
                return
            if proc.proc.poll() is not None:
                raise RuntimeError(f"compute_ctl exited:\n{proc.log()}")
            time.sleep(poll)
    finally:
        poller.close()
    raise RuntimeError(f"compute_ctl not {wanted}:\n{proc.log()}")


def _finish(proc: process.ComputeProcess) -> None:
    proc.request("POST", "/terminate?mode=immediate")
    proc.wait_exit(timeout=30)


def _process_run(
    base: Path, spec: dict[str, Any], port: int, env: Mapping[str, str]
) -> tuple[float, dict[str, int]]:
    config = base / "config.json"
    config.write_text(json.dumps({"spec": spec}))
    started = time.monotonic()
    proc = process.ComputeProcess(pgdata=base / "pgdata", port=port, config=config, env=dict(env))
    try:
        _wait_status(proc, "running")
        elapsed = time.monotonic() - started
        cpu_ms = _cpu_ms(proc.proc.pid)
        return elapsed, {**_timings(proc), "compute_ctl_cpu_ms": cpu_ms}
    finally:
        _finish(proc)


def _pooled_run(
    base: Path, spec: dict[str, Any], port: int, env: Mapping[str, str]
) -> tuple[float, dict[str, int]]:
    config = base / "config.json"
    config.write_text(json.dumps({"spec": None}))
    proc = process.ComputeProcess(pgdata=base / "pgdata", port=port, config=config, env=dict(env))
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


def _measure(
    *, runs: int, roles: int, env: Mapping[str, str]
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, int]]], list[dict[str, float]]]:
    results: dict[str, list[float]] = {"process": [], "pooled": [], "baseline": []}
    timings: dict[str, list[dict[str, int]]] = {"process": [], "pooled": []}
    baseline_phases: list[dict[str, float]] = []
    for run in range(runs):
        for kind in ("baseline", "process", "pooled"):
            base = pgserver.scratch_dir(f"bench-{kind}-")
            port = pgserver.free_port()
            raw = _spec(port, roles)
            try:
                if kind == "baseline":
                    spec = spec_mod.ComputeSpec.model_validate(raw)
                    phases = asyncio.run(_baseline(base, spec, port))
                    results[kind].append(phases["total"])
                    baseline_phases.append(phases)
                else:
                    runner = _process_run if kind == "process" else _pooled_run
                    elapsed, t = runner(base, raw, port, env)
                    results[kind].append(elapsed)
                    timings[kind].append(t)
            finally:
                shutil.rmtree(base, ignore_errors=True)
        print(
            f"run {run + 1}/{runs}: "
            + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in results.items()),
            file=sys.stderr,
        )
    return results, timings, baseline_phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cold_start", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--roles", type=int, default=1, help="roles in the spec")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="run compute_ctl with the environment's bytecode setting, not a warmed cache",
    )
    args = parser.parse_args(argv)
    with _bytecode_env(not args.no_bytecode) as env:
        results, timings, baseline_phases = _measure(runs=args.runs, roles=args.roles, env=env)
    base_median = statistics.median(results["baseline"])
    bytecode = "environment's bytecode setting" if args.no_bytecode else "bytecode compiled"
    print(
        f"cold start to running, small spec ({args.roles} role(s), 1 database), "
        f"{args.runs} runs, {bytecode}"
    )
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
        shown = (
            "wait_for_spec_ms",
            "start_postgres_ms",
            "config_ms",
            "total_startup_ms",
            "compute_ctl_cpu_ms",
        )
        print(
            f"  {kind} timings (median): "
            + ", ".join(f"{k} {phases[k]:.0f}" for k in shown if k in phases)
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
