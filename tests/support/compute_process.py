"""compute_ctl as a real subprocess, driven over its HTTP ports on loopback.

``ComputeProcess`` starts ``python -m compute_ctl.compute`` from the repository root
with a config file and free ports; ``running_compute`` is the whole life of a local-mode
compute (start, wait for ``running``, stop), as the HTTP tier and the benchmarks use it.
Also the process inspection both need (``processes_in``, ``alive``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from tests import pgserver, support
from tests.support import specs

__all__ = [
    "COMPUTE_ID",
    "ComputeProcess",
    "alive",
    "compute_ctl_argv",
    "processes_in",
    "running_compute",
    "wait_until_sync",
    "write_config",
]

COMPUTE_ID = "compute-test"


def wait_until_sync(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition with a deadline (never a bare sleep to synchronise)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def processes_in(pgdata: Path) -> list[int]:
    """Live processes whose working directory is ``pgdata`` (every postgres process chdirs
    into its data directory)."""
    target = str(pgdata.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target and alive(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


def compute_ctl_argv() -> list[str]:
    return [sys.executable, "-m", "compute_ctl.compute"]


def write_config(
    path: Path,
    spec: dict[str, Any] | None,
    *,
    jwks: Sequence[dict[str, Any]] = (),
    config: Mapping[str, Any] | None = None,
) -> Path:
    """A config file for ``-c``: ``spec``, the JWKS ``jwks`` (none by default) and any other
    ``compute_ctl_config`` entries (``config``, e.g. ``tls``)."""
    compute_ctl_config = {"jwks": {"keys": list(jwks)}, **(config or {})}
    path.write_text(json.dumps({"spec": spec, "compute_ctl_config": compute_ctl_config}))
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
        compute_id: str = COMPUTE_ID,
        failed_exit_delay: float | None = 0,
    ) -> None:
        """``failed_exit_delay``: seconds before a failed compute exits (``None``: the
        default); ``args`` are appended to the command line."""
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
            f"postgresql://{support.SUPERUSER}@127.0.0.1:{port}/postgres",
            "-i",
            compute_id,
            "-c",
            str(config),
            "--internal-http-port",
            str(self.internal_port),
            "--external-http-port",
            str(self.external_port),
            *([] if failed_exit_delay is None else ["--failed-exit-delay", str(failed_exit_delay)]),
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
                cwd=support.REPO,
                preexec_fn=pgserver.die_with_parent(),
            )

    # --- addresses -----------------------------------------------------------------

    @property
    def pg_port(self) -> int:
        return self.port

    @property
    def base(self) -> Path:
        """The scratch directory holding PGDATA, the config and the log."""
        return self.pgdata.parent

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def external(self) -> str:
        return f"http://127.0.0.1:{self.external_port}"

    @property
    def dsn(self) -> str:
        """The superuser, over the unix socket in PGDATA: pg_hba.conf trusts it only there."""
        return make_conninfo(
            host=str(self.pgdata), port=self.port, user=support.SUPERUSER, dbname="postgres"
        )

    # --- HTTP --------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.internal_port}{path}",
            data=data,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 (loopback http)
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def status(self) -> dict[str, Any]:
        """``GET /status``; raises if compute_ctl does not answer 200."""
        code, body = self.request("GET", "/status")
        if code != 200:
            raise AssertionError(f"GET /status: HTTP {code}: {body}")
        assert isinstance(body, dict)
        return body

    def status_or_none(self) -> dict[str, Any] | None:
        """``GET /status``, or ``None`` while compute_ctl does not answer."""
        try:
            return self.status()
        except (OSError, AssertionError):
            return None

    def wait_status(self, wanted: str, *, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status_or_none()
            if status is not None and status["status"] == wanted:
                return status
            if status is not None and status["status"] == "failed":
                raise AssertionError(f"compute failed, not {wanted}:\n{self.log()}")
            if self.proc.poll() is not None:
                raise AssertionError(f"compute_ctl exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {wanted} after {timeout} s ({status}):\n{self.log()}")
            time.sleep(0.02)

    def wait_migrations(self, *, timeout: float = 30.0) -> None:
        """Until the start's background migrations are no longer running (quiet compute)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status_or_none() or {}
            if (status.get("migrations") or {}).get("state") != "running":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"migrations still running after {timeout} s")
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

    def log_tail(self) -> str:
        return self.log()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        """``/terminate?mode=immediate``, then SIGTERM; SIGKILL after 30 s."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            self.request("POST", "/terminate?mode=immediate")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.stop()

    def wait_no_postgres(self, *, timeout: float = 10.0) -> None:
        check: Callable[[], bool] = lambda: processes_in(self.pgdata) == []  # noqa: E731
        wait_until_sync(check, timeout=timeout, what="postgres processes to exit")


@contextlib.contextmanager
def running_compute(
    *,
    jwks: Sequence[dict[str, Any]] = (),
    allow_unauthenticated: bool = False,
    extra_args: Sequence[str] = (),
    compute_id: str = COMPUTE_ID,
    timeout: float = 60.0,
    spec_extra: Mapping[str, Any] | None = None,
    config_extra: Mapping[str, Any] | None = None,
) -> Iterator[ComputeProcess]:
    """A local-mode compute, ``running`` on free loopback ports; terminated on exit.

    ``spec_extra``: top-level spec fields over the local spec's; ``config_extra``: other
    ``compute_ctl_config`` entries (``write_config``)."""
    base = pgserver.scratch_dir("compute-ctl-")
    try:
        port = pgserver.free_port()
        spec = {**specs.local_spec(port=port), **(spec_extra or {})}
        config = write_config(base / "config.json", spec, jwks=jwks, config=config_extra)
        compute = ComputeProcess(
            pgdata=base / "pgdata",
            port=port,
            config=config,
            compute_id=compute_id,
            failed_exit_delay=None,
            args=[
                "-b",
                str(pgserver.tools().postgres),
                "--external-http-host",
                "127.0.0.1",
                *(["--allow-unauthenticated"] if allow_unauthenticated else []),
                *extra_args,
            ],
        )
        try:
            compute.wait_status("running", timeout=timeout)
            compute.wait_migrations(timeout=timeout)
            yield compute
        finally:
            compute.terminate()
    finally:
        shutil.rmtree(base, ignore_errors=True)
