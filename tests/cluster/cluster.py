"""The running one-node cluster as the tests use it: kubectl, helm, namespaces, pods, waits.

Owns test-side plumbing over the real ``kubectl`` and ``helm`` binaries (built into the
cache by ``tests/apiserver/build.sh cluster``) with the admin kubeconfig; it asserts
nothing. Everything a user would type goes through ``kubectl``/``helm`` here, so the
scenarios exercise the same commands as docs/quickstart.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.apiserver import controlplane
from tests.cluster import node as node_
from tests.cluster import toolchain
from tests.pgserver import free_port

__all__ = ["Cluster", "Namespace", "Ports", "finish", "started", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, what: str, timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; its last exception is reported."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s (last error: {last!r})")
        time.sleep(0.25)


@dataclasses.dataclass(frozen=True)
class Ports:
    """The host ports of one compute pod (hostNetwork): chosen free per test."""

    postgres: int
    http: int
    internal: int
    operator_probe: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port())

    def helm_values(self) -> list[str]:
        return [
            f"ports.postgres={self.postgres}",
            f"ports.http={self.http}",
            f"ports.internal={self.internal}",
            f"ports.operatorProbe={self.operator_probe}",
        ]


@dataclasses.dataclass
class Cluster:
    plane: controlplane.ControlPlane
    node: node_.Node
    tools: toolchain.Tools

    @property
    def kubectl_bin(self) -> Path:
        return self.tools.kubectl

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
        env["KUBECONFIG"] = str(self.plane.kubeconfig)
        env["HELM_CACHE_HOME"] = str(self.node.workdir / "helm-cache")
        env["HELM_CONFIG_HOME"] = str(self.node.workdir / "helm-config")
        env["HELM_DATA_HOME"] = str(self.node.workdir / "helm-data")
        env["PATH"] = f"{self.tools.kubectl.parent}:{self.tools.helm.parent}:{env.get('PATH', '')}"
        return env

    def run(
        self, argv: list[str], *, check: bool = True, timeout: float = 90.0, stdin: str = ""
    ) -> str:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=REPO,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    @contextlib.contextmanager
    def background(
        self, argv: list[str], *, env: dict[str, str] | None = None
    ) -> Iterator[subprocess.Popen[str]]:
        """``argv`` started with this cluster's environment (plus ``env``); killed if it is
        still running when the block ends. ``finish`` waits for it."""
        proc = subprocess.Popen(
            argv,
            env=self.env() | (env or {}),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.run([str(self.tools.kubectl), *args], **kw)

    def helm(self, *args: str, **kw: Any) -> str:
        return self.run([str(self.tools.helm), *args], **kw)

    def wait_node_ready(self) -> None:
        def ready() -> bool:
            node = json.loads(self.kubectl("get", "node", node_.NODE_NAME, "-o", "json"))
            return any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
            )

        try:
            wait_for(ready, what="node Ready", timeout=120)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\nkubelet:\n{self.node.log('kubelet')}") from e

    def apply_crd(self) -> None:
        self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests" / "crd")
        )
        self.kubectl("wait", "--for=condition=Established", "crd/computespecs.compute.pgctl.dev")

    @contextlib.contextmanager
    def namespace(self, tmp_path: Path) -> Iterator[Namespace]:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        ns = Namespace(cluster=self, name=name, tmp_path=tmp_path)
        try:
            yield ns
        finally:
            ns.cleanup()


@dataclasses.dataclass
class Namespace:
    """One test's namespace: kubectl/helm scoped to it, and its pods' state."""

    cluster: Cluster
    name: str
    tmp_path: Path

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.cluster.kubectl("-n", self.name, *args, **kw)

    def helm(self, *args: str, **kw: Any) -> str:
        return self.cluster.helm("-n", self.name, *args, **kw)

    def exec(self, pod: str, container: str, *argv: str, **kw: Any) -> str:
        """The output of ``argv`` run in ``container`` of ``pod`` (``kubectl exec``)."""
        return self.kubectl("exec", pod, "-c", container, "--", *argv, **kw)

    def sh(self, pod: str, container: str, script: str, **kw: Any) -> str:
        """The output of a shell ``script`` run in ``container`` of ``pod``."""
        return self.exec(pod, container, "sh", "-c", script, **kw)

    def make_keys(self, compute_id: str) -> None:
        """The compute's keys Secret, as the docs make it: scripts/compute-keys | kubectl apply."""
        secret = self.cluster.run([str(REPO / "scripts" / "compute-keys"), compute_id])
        self.kubectl("apply", "-f", "-", stdin=secret)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-o", "json"))
        return obj

    def get_or_none(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-o", "json", "--ignore-not-found", check=False)
        return json.loads(out) if out.strip() else None

    def cspec(self, name: str) -> dict[str, Any]:
        return self.get("computespec", name)

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        status = self.cspec(name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == kind), None)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events of the ComputeSpec ``name``, oldest first."""
        out = json.loads(
            self.kubectl(
                "get",
                "events",
                "-o",
                "json",
                "--field-selector",
                f"involvedObject.name={name},involvedObject.kind=ComputeSpec",
            )
        )
        items: list[dict[str, Any]] = out["items"]
        return sorted(
            items, key=lambda e: e.get("firstTimestamp") or e["metadata"]["creationTimestamp"]
        )

    def pod(self, name: str) -> dict[str, Any]:
        return self.get("pod", name)

    def container_status(self, pod: str, container: str) -> dict[str, Any]:
        statuses = self.pod(pod)["status"].get("containerStatuses", [])
        return next(s for s in statuses if s["name"] == container)

    def wait_ready(self, name: str, *, generation: int | None = None, timeout: float = 90) -> None:
        """Until the ComputeSpec is Ready=True (at ``generation`` when given)."""

        def ready() -> bool:
            status = self.cspec(name).get("status") or {}
            ok = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )
            return ok and (generation is None or status.get("observedGeneration") == generation)

        wait_for(ready, what=f"{name} Ready", timeout=timeout)

    def wait_pod_ready(self, pod: str, *, timeout: float = 120) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.get_or_none("pod", pod)
            conditions = ((obj or {}).get("status") or {}).get("conditions", [])
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            return obj if ok else None

        return wait_for(ready, what=f"pod {pod} Ready", timeout=timeout)

    def logs(self, pod: str, container: str, *, previous: bool = False) -> str:
        args = ["logs", pod, "-c", container]
        if previous:
            args.append("--previous")
        return self.kubectl(*args, check=False)

    def diagnostics(self) -> str:
        parts = [self.kubectl("get", "all,computespec,events", "-o", "wide", check=False)]
        for pod in self.kubectl("get", "pods", "-o", "name", check=False).split():
            for c in ("compute-ctl", "operator"):
                parts.append(
                    f"--- {pod} {c}\n"
                    + self.kubectl("logs", pod, "-c", c, "--tail=40", check=False)
                )
        return "\n".join(parts)

    def cleanup(self) -> None:
        for release in self.helm("list", "-q", check=False).split():
            self.helm("uninstall", release, "--wait", "--timeout=60s", check=False, timeout=90)
        # Whatever still holds a finalizer would keep the namespace Terminating forever.
        for name in self.kubectl("get", "computespec", "-o", "name", check=False).split():
            self.kubectl(
                "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
            )
        self.kubectl(
            "delete",
            "namespace",
            self.name,
            "--wait=true",
            "--timeout=90s",
            check=False,
            timeout=120,
        )


@contextlib.contextmanager
def started(tools: toolchain.Tools) -> Iterator[Cluster]:
    """A one-node cluster from ``tools``: the control plane, the node with the pause and
    compute images loaded, Ready, with the CRD applied; both stopped when the block ends."""
    plane = controlplane.ControlPlane.start(tools.apiserver)
    node = None
    try:
        node = node_.Node.start(plane, tools, [tools.pause_archive, tools.image_archive])
        running = Cluster(plane=plane, node=node, tools=tools)
        running.wait_node_ready()
        running.apply_crd()
        yield running
    finally:
        if node is not None:
            node.stop()
        plane.stop()


def finish(proc: subprocess.Popen[str], *, timeout: float = 180.0) -> str:
    """The output of a ``Cluster.background`` process that exits 0 within ``timeout``."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args!r} exited {proc.returncode}:\n{out}")
    return out


def container_pid(ns: Namespace, pod: str, container: str) -> int:
    """The host PID of a running container's main process (from containerd's task list)."""
    container_id = ns.container_status(pod, container)["containerID"].split("://", 1)[1]
    for line in ns.cluster.node.ctr("tasks", "ls").splitlines()[1:]:
        task, pid, state = line.split()[:3]
        if task == container_id and state == "RUNNING":
            return int(pid)
    raise LookupError(f"no running task for {pod}/{container} ({container_id})")


def restarts(ns: Namespace, pod: str, container: str) -> int:
    count: int = ns.container_status(pod, container)["restartCount"]
    return count
