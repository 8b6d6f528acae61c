"""A throwaway Kubernetes control plane: Debian's etcd plus a kube-apiserver built from Go.

Owns the two processes (free loopback ports, a temp directory, the PKI, kubeconfigs) and
their teardown. Both children get a parent-death signal, so nothing outlives the test run.
There is no controller-manager: nothing garbage-collects, namespaces never finish deleting,
and ServiceAccounts get no token Secrets (tokens come from the TokenRequest API).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from compute_ctl.compute import pgtools
from tests.apiserver import pki, toolchain
from tests.pgserver import free_port

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 90.0
# Request metadata (who, verb, URI, response code) of every request made with a token: the
# operator's and test ServiceAccounts'. Admin (certificate) requests are not logged.
_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}
_ROOT = pgtools.OsUser(name="self", uid=None, gid=None, home="/")  # no user switch


def _spawn(argv: list[str], *, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pgtools.parent_death_preexec(_ROOT),
        )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


@dataclasses.dataclass
class ControlPlane:
    """A running etcd + kube-apiserver; ``kubeconfig`` is the admin's (system:masters)."""

    workdir: Path
    url: str
    ca: pki.Ca
    admin: pki.CertFiles
    kubeconfig: Path
    etcd_url: str = ""
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, binaries: toolchain.Binaries) -> ControlPlane:
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None  # etcd fsyncs
        workdir = Path(tempfile.mkdtemp(prefix="compute-ctl-kube-", dir=base))
        ca = pki.Ca.create(workdir, name="ca")
        admin = ca.issue(workdir, name="admin", organizations=("system:masters",))
        port = free_port()
        plane = cls(
            workdir=workdir,
            url=f"https://127.0.0.1:{port}",
            ca=ca,
            admin=admin,
            kubeconfig=workdir / "admin.kubeconfig",
        )
        try:
            plane._start_etcd(binaries.etcd)
            plane._start_apiserver(binaries.kube_apiserver, port=port)
        except BaseException:
            plane.stop()
            raise
        plane.write_kubeconfig(
            plane.kubeconfig,
            user={
                "client-certificate": str(admin.cert),
                "client-key": str(admin.key),
            },
        )
        return plane

    def _start_etcd(self, etcd: Path) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self.etcd = _spawn(
            [
                str(etcd),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=test=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
            log_path=self.workdir / "etcd.log",
        )
        self._wait(
            "etcd",
            self.etcd,
            self.workdir / "etcd.log",
            lambda: (
                b'"health":"true"'
                in urllib.request.urlopen(  # noqa: S310
                    f"{self.etcd_url}/health", timeout=2
                ).read()
            ),
        )

    def _start_apiserver(self, binary: Path, *, port: int) -> None:
        serving = self.ca.issue(
            self.workdir, name="serving", server_ips=("127.0.0.1",), server_dns=("localhost",)
        )
        sa = pki.write_rsa_key_pair(self.workdir, name="service-account")
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(_AUDIT_POLICY))
        self.apiserver = _spawn(
            [
                str(binary),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca.cert_path}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--v=1",
            ],
            log_path=self.workdir / "kube-apiserver.log",
        )
        context = self.ssl_context(
            client_cert=self.ca.issue(self.workdir, name="probe", organizations=("system:masters",))
        )
        self._wait(
            "kube-apiserver",
            self.apiserver,
            self.workdir / "kube-apiserver.log",
            lambda: (
                urllib.request.urlopen(  # noqa: S310
                    f"{self.url}/readyz", timeout=5, context=context
                ).status
                == 200
            ),
        )

    def ssl_context(self, *, client_cert: pki.CertFiles | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        if client_cert is not None:
            context.load_cert_chain(str(client_cert.cert), str(client_cert.key))
        return context

    @staticmethod
    def _wait(
        name: str, proc: subprocess.Popen[bytes], log_path: Path, ready: Callable[[], bool]
    ) -> None:
        started = time.monotonic()
        deadline = started + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{_tail(log_path)}")
            try:
                if ready():
                    log.info("%s ready in %.1f s", name, time.monotonic() - started)
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready in {_START_TIMEOUT} s:\n{_tail(log_path)}")
            time.sleep(0.1)

    def write_kubeconfig(
        self, path: Path, *, user: dict[str, str], namespace: str = "default"
    ) -> Path:
        """A kubeconfig for this server and one user (client cert paths or a token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.ca.cert_path),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audit_events(self, *, user: str) -> list[dict[str, Any]]:
        """The audit events (request metadata) of one user, oldest first."""
        events = []
        with open(self.audit_log) as f:
            for line in f:
                event = json.loads(line)
                if event["user"]["username"] == user:
                    events.append(event)
        return events

    def logs(self) -> str:
        return _tail(self.workdir / "kube-apiserver.log")

    def stop(self) -> None:
        _stop(self.apiserver)
        _stop(self.etcd)
        shutil.rmtree(self.workdir, ignore_errors=True)
