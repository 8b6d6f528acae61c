"""compute_ctl as a real subprocess for core's process-level tests, driven over its
internal HTTP port on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests import pgserver
from tests.core import helpers

__all__ = ["ComputeProcess", "compute_ctl_argv", "write_config"]


def compute_ctl_argv() -> list[str]:
    return [sys.executable, "-m", "compute_ctl.compute"]


def write_config(path: Path, spec: dict[str, Any] | None) -> Path:
    """A config file for ``-c``: ``spec`` and no JWKS keys."""
    path.write_text(json.dumps({"spec": spec, "compute_ctl_config": {"jwks": {"keys": []}}}))
    return path


class ComputeProcess:
    def __init__(
        self,
        *,
        pgdata: Path,
        port: int,
        config: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.pgdata = pgdata
        self.port = port
        self.internal_port = pgserver.free_port()
        self.external_port = pgserver.free_port()
        self.log_path = pgdata.parent / f"compute_ctl-{self.internal_port}.log"
        argv = [
            *compute_ctl_argv(),
            "-D",
            str(pgdata),
            "-C",
            f"postgresql://{helpers.SUPERUSER}@127.0.0.1:{port}/postgres",
            "-i",
            "compute-test",
            "-c",
            str(config),
            "--internal-http-port",
            str(self.internal_port),
            "--external-http-port",
            str(self.external_port),
            "--failed-exit-delay",
            "0",
            "--internal-full-api",
            *args,
        ]
        # `-m` from the repository root puts the worktree first on sys.path. PYTHONPATH
        # would too, but before the standard library, where the top-level `operator/`
        # folder shadows the stdlib `operator` module and Python cannot even start.
        full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        full_env.update(env or {})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                env=full_env,
                cwd=helpers.REPO,
                preexec_fn=pgserver.die_with_parent(),
            )

    # --- HTTP --------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.internal_port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 (loopback http)
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = self.request("GET", "/status")
        except OSError:
            return None
        return body if code == 200 else None

    def wait_status(self, wanted: str, *, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status is not None and status["status"] == wanted:
                return status
            if self.proc.poll() is not None:
                raise AssertionError(f"compute_ctl exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {wanted} after {timeout} s ({status}):\n{self.log()}")
            time.sleep(0.02)

    # --- process -----------------------------------------------------------------

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, *, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait_no_postgres(self, *, timeout: float = 10.0) -> None:
        check: Callable[[], bool] = lambda: helpers.processes_in(self.pgdata) == []  # noqa: E731
        helpers.wait_until_sync(check, timeout=timeout, what="postgres processes to exit")
