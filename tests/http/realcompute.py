"""A real compute_ctl process for the HTTP tier and ``bench.http_api``.

Starts ``python -m compute_ctl.compute`` with a local-mode spec (initdb, no Neon storage)
on free loopback ports, waits until ``/status`` says ``running`` and stops it at the end
(``/terminate``, then signals).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

from tests import pgserver

REPO = Path(__file__).resolve().parent.parent.parent
SUPERUSER = "cloud_admin"
COMPUTE_ID = "compute-under-test"


def local_spec(*, port: int, settings: Sequence[tuple[str, str, str]] = ()) -> dict[str, Any]:
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "roles": [],
            "databases": [],
            "settings": [
                {"name": "port", "value": str(port), "vartype": "integer"},
                {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
                {"name": "fsync", "value": "off", "vartype": "bool"},
                {"name": "shared_buffers", "value": "16MB", "vartype": "string"},
                {"name": "max_connections", "value": "40", "vartype": "integer"},
                *({"name": n, "value": v, "vartype": t} for n, v, t in settings),
            ],
        },
    }


@dataclasses.dataclass
class ComputeProcess:
    proc: subprocess.Popen[bytes]
    pg_port: int
    external_port: int
    internal_port: int
    base: Path

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def external(self) -> str:
        return f"http://127.0.0.1:{self.external_port}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.pg_port}/postgres"

    def log_tail(self) -> str:
        return (self.base / "compute_ctl.log").read_text(errors="replace")[-4000:]

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{self.internal}/status", timeout=10).json()
        return body


def _wait_running(compute: ComputeProcess, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if compute.proc.poll() is not None:
            raise RuntimeError(f"compute_ctl exited: {compute.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            body = compute.status()
            status = body["status"]
            # Running, and quiet: the start's background migrations have finished.
            migrations = body.get("migrations") or {}
            if status == "running" and migrations.get("state") != "running":
                return
            if status == "failed":
                raise RuntimeError(f"compute failed: {compute.log_tail()}")
        time.sleep(0.05)
    raise TimeoutError(f"compute_ctl not running in {timeout} s: {compute.log_tail()}")


@contextlib.contextmanager
def compute_ctl(
    *,
    jwks: Sequence[dict[str, Any]] = (),
    allow_unauthenticated: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> Iterator[ComputeProcess]:
    base = pgserver.scratch_dir("compute-ctl-")
    try:
        compute = _spawn(
            base,
            jwks=jwks,
            allow_unauthenticated=allow_unauthenticated,
            extra_args=extra_args,
        )
        try:
            _wait_running(compute, timeout=timeout)
            yield compute
        finally:
            _stop(compute)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _spawn(
    base: Path,
    *,
    jwks: Sequence[dict[str, Any]],
    allow_unauthenticated: bool,
    extra_args: Sequence[str],
) -> ComputeProcess:
    pg_port = pgserver.free_port()
    config = base / "config.json"
    config.write_text(
        json.dumps(
            {
                "spec": local_spec(port=pg_port),
                "compute_ctl_config": {"jwks": {"keys": list(jwks)}},
            }
        )
    )
    external_port, internal_port = pgserver.free_port(), pgserver.free_port()
    argv = [
        sys.executable,
        "-m",
        "compute_ctl.compute",
        "-D",
        str(base / "pgdata"),
        "-C",
        f"postgresql://{SUPERUSER}@127.0.0.1:{pg_port}/postgres",
        "-i",
        COMPUTE_ID,
        "-c",
        str(config),
        "-b",
        str(pgserver.tools().postgres),
        "--external-http-host",
        "127.0.0.1",
        "--external-http-port",
        str(external_port),
        "--internal-http-port",
        str(internal_port),
        "--internal-full-api",
        *(["--allow-unauthenticated"] if allow_unauthenticated else []),
        *extra_args,
    ]
    # Run from the repository root rather than with PYTHONPATH, which would let its
    # ``operator/`` folder shadow the standard library's ``operator`` module.
    with open(base / "compute_ctl.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=pgserver.die_with_parent(),
        )
    return ComputeProcess(
        proc=proc,
        pg_port=pg_port,
        external_port=external_port,
        internal_port=internal_port,
        base=base,
    )


def _stop(compute: ComputeProcess) -> None:
    proc = compute.proc
    if proc.poll() is None:
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{compute.internal}/terminate?mode=immediate", timeout=30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
