"""The two processes of a compute pod, run on loopback: compute_ctl and the operator sidecar.

``Compute`` runs the real ``python -m compute_ctl.compute`` (which runs real PostgreSQL)
with a spec-less config holding the JWKS that ``scripts/compute-keys`` made, so it waits
for the operator's ``/configure``; ``Operator`` runs ``python -m compute_ctl.operator``
with a kubeconfig for a ServiceAccount token and the private key, and calls the external
API with signed JWTs. Both log
to files whose tails go into failures. This module knows the CLIs and the internal HTTP
API's ``/status``; it asserts nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests import pgserver
from tests.operator import keys as keys_mod

__all__ = ["Compute", "Operator"]

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    # No PYTHONPATH: the repository root on it would shadow the standard library's
    # ``operator`` with ours before ``site`` runs. ``-m`` from the root (cwd) finds this
    # checkout's ``compute_ctl`` once startup is over.
    drop = {"KUBECONFIG", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


class _Process:
    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self, *, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Compute(_Process):
    """compute_ctl with PGDATA in a scratch dir, postgres on ``pg_port``, HTTP on loopback."""

    name = "compute_ctl"

    def __init__(self, compute_id: str = "compute-1", *, secret: Any = None) -> None:
        """``secret``: the keys Secret (``data``) of an install, else a fresh pair."""
        super().__init__(pgserver.scratch_dir("compute-"))
        self.compute_id = compute_id
        self.pg_port = pgserver.free_port()
        self.internal_port = pgserver.free_port()
        self.external_port = pgserver.free_port()
        if secret is None:
            self.keys = keys_mod.make(self.workdir, compute_id)
        else:
            self.keys = keys_mod.unpack(self.workdir, secret)

    @property
    def url(self) -> str:
        """The external API (JWT), which the operator calls."""
        return f"http://127.0.0.1:{self.external_port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def auth(self) -> dict[str, str]:
        """The header of an authorized client (signed with the operator's key)."""
        return keys_mod.bearer(self.keys, self.compute_id)

    def connstr(self, dbname: str = "postgres") -> str:
        """``-C``: where compute_ctl's postgres listens, as whom."""
        return f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{self.pg_port}/{dbname}"

    def superuser_dsn(self) -> str:
        """The superuser over the socket in PGDATA, the only place pg_hba.conf trusts it."""
        return (
            f"host={self.workdir / 'pgdata'} port={self.pg_port} "
            f"user={pgserver.SUPERUSER} dbname=postgres"
        )

    def settings(self) -> list[dict[str, str]]:
        """The ``cluster.settings`` a spec for this compute must carry (its port)."""
        return [
            {"name": "port", "value": str(self.pg_port), "vartype": "integer"},
            {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
            {"name": "fsync", "value": "off", "vartype": "bool"},
        ]

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self._spawn(
            [
                sys.executable,
                "-m",
                "compute_ctl.compute",
                f"--pgdata={self.workdir / 'pgdata'}",
                f"--connstr={self.connstr()}",
                f"--compute-id={self.compute_id}",
                f"--config={self.keys.config}",
                "--external-http-host=127.0.0.1",
                f"--external-http-port={self.external_port}",
                f"--internal-http-port={self.internal_port}",
                "--failed-exit-delay=600",
                *extra,
            ],
            _env(**(env or {})),
        )

    def status(self) -> dict[str, Any]:
        """compute_ctl's ``GET /status``, as an authorized client."""
        request = urllib.request.Request(f"{self.url}/status", headers=self.auth())  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            body: dict[str, Any] = json.load(response)
            return body

    def configure(self, spec: dict[str, Any]) -> int:
        """A direct ``POST /configure`` (as a control plane would); returns the HTTP code."""
        body = json.dumps({"spec": spec, "compute_ctl_config": {}}).encode()
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}/configure",
            data=body,
            headers={"Content-Type": "application/json", **self.auth()},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            code: int = response.status
            return code

    def failpoint(self, name: str, action: str) -> None:
        """Set a failpoint (``--failpoints``) through the internal port, as Neon's tests do."""
        body = json.dumps([{"name": name, "actions": action}]).encode()
        request = urllib.request.Request(  # noqa: S310
            f"{self.internal_url}/failpoints",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def try_status(self) -> dict[str, Any] | None:
        with contextlib.suppress(OSError):
            return self.status()
        return None

    def postmaster_pid(self) -> int:
        return int((self.workdir / "pgdata" / "postmaster.pid").read_text().split("\n")[0])


class Operator(_Process):
    """The operator sidecar for resource ``name`` in ``namespace``, as a ServiceAccount."""

    name = "operator"

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        namespace: str,
        kubeconfig: Path,
        compute_url: str,
        key_file: Path | None,
    ) -> None:
        super().__init__(workdir)
        self.key_file = key_file
        self.resource = name
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.compute_url = compute_url

    def start(
        self,
        *,
        resync_interval: float = 60.0,
        pod_name: str | None = None,
        secret_interval: float | None = None,
        log_level: str = "DEBUG",
    ) -> None:
        """``pod_name``: find the resource and the compute id as the kustomize base does;
        ``log_level``: DEBUG for the tests' log tails, quieter for benchmarks."""
        who = [f"--pod-name={pod_name}", f"--compute-id={pod_name}"] if pod_name else []
        self._spawn(
            [
                sys.executable,
                "-m",
                "compute_ctl.operator",
                *(who or [f"--name={self.resource}"]),
                f"--namespace={self.namespace}",
                f"--compute-url={self.compute_url}",
                *([f"--key-file={self.key_file}"] if self.key_file else []),
                f"--resync-interval={resync_interval}",
                *([f"--secret-interval={secret_interval}"] if secret_interval else []),
                "--retry-delay=0.5",
                "--busy-timeout=60",
                f"--log-level={log_level}",
            ],
            _env(KUBECONFIG=str(self.kubeconfig)),
        )
