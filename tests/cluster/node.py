"""The node of the one-node test cluster: containerd + runc, kubelet, controller-manager, scheduler.

Owns those processes, their private directories, the mount namespace and cgroup subtree
they work in, and a teardown that leaves nothing behind. The control plane (etcd and
kube-apiserver) is ``tests.apiserver.controlplane``'s.

- containerd (Debian) runs with a private root, state, socket and CNI config, in a mount
  namespace of its own which the kubelet joins: every mount the kubelet, containerd and runc
  make goes away with the namespace.
- runc is reached through ``runc-wrapper`` (no ``CAP_SYS_RESOURCE`` here, see there).
- The kubelet (built with a loopback node IP allowed, see ``tests/apiserver/build.sh``)
  listens on 127.0.0.1 only; node IP 127.0.0.1, so probes, hostNetwork pods and the API
  server's calls to the kubelet all stay on loopback. Teardown kills what is left in
  the containers' cgroups (/k8s.io/<id>) and removes them.
- The CNI config is the ``loopback`` plugin alone: enough for the node to report Ready; the
  tier's pods use ``hostNetwork: true``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from compute_ctl.compute import pgtools
from tests.apiserver import controlplane
from tests.cluster import toolchain
from tests.pgserver import free_port

__all__ = ["NODE_NAME", "Node"]

log = logging.getLogger(__name__)

NODE_NAME = "localhost"  # resolves to loopback: the API server reaches the kubelet by it
_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_ROOT = pgtools.OsUser(name="self", uid=None, gid=None, home="/")
_CGROUP_FS = Path("/sys/fs/cgroup")
_WRAPPER = Path(__file__).with_name("runc-wrapper")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _new_mount_namespace() -> None:
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")


def _join_mount_namespace(pid: int) -> Callable[[], None]:
    def join() -> None:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        if _libc().setns(fd, _CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "setns(mnt)")
        os.close(fd)

    return join


def _spawn(
    argv: list[str], *, log_path: Path, before: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pgtools.parent_death_preexec(_ROOT, before=before),
        )


def _stop(proc: subprocess.Popen[bytes] | None, *, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _controllers() -> list[Path]:
    """The cgroup v1 hierarchies (one directory each; joint mounts appear once)."""
    seen: set[int] = set()
    out = []
    for path in sorted(_CGROUP_FS.iterdir()):
        if path.is_symlink() or not path.is_dir() or path.name == "unified":
            continue
        ino = path.stat().st_ino
        if ino in seen:
            continue
        seen.add(ino)
        out.append(path)
    return out


def iptables_chains() -> set[str]:
    """Every iptables chain on the host, as ``table:chain`` (to show the node adds none)."""
    chains: set[str] = set()
    if shutil.which("iptables-save") is None:
        return chains
    proc = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    table = ""
    for line in proc.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add(f"{table}:{line[1:].split()[0]}")
    return chains


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


_BASE = Path("/var/tmp")
_PREFIX = "compute-ctl-node-"


def reap_stale() -> None:
    """Tear down the nodes of test sessions that died without their teardown (SIGKILL):
    their containerd and kubelet died with them (parent-death signal), but shims,
    containers, cgroups and files remain."""
    for workdir in _BASE.glob(f"{_PREFIX}*"):
        try:
            pid_text = (workdir / "owner").read_text().strip()
        except OSError:
            continue
        if Path(f"/proc/{pid_text}").exists():
            continue  # a live session's node
        log.warning("reaping the node of dead session %s: %s", pid_text, workdir)
        stale = Node(
            workdir=workdir,
            plane=None,  # type: ignore[arg-type]  # stop() needs no control plane
            socket=workdir / "containerd.sock",
        )
        stale.stop()


@dataclasses.dataclass
class Node:
    """A running node; ``ctr(...)`` talks to its containerd."""

    workdir: Path
    plane: controlplane.ControlPlane
    socket: Path
    procs: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    kubelet_port: int = 0
    cgroups: list[Path] = dataclasses.field(default_factory=list)  # seen at teardown

    @classmethod
    def start(
        cls, plane: controlplane.ControlPlane, tools: toolchain.Tools, images: list[Path]
    ) -> Node:
        reap_stale()
        workdir = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=_BASE))
        node = cls(
            workdir=workdir,
            plane=plane,
            socket=workdir / "containerd.sock",
        )
        (workdir / "owner").write_text(str(os.getpid()))
        try:
            node._start_containerd(tools)
            for image in images:
                node.ctr("images", "import", str(image))
            node._start_kubelet(tools)
            node._start_controllers(tools)
        except BaseException:
            node.stop()
            raise
        return node

    # --- containerd ---------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 300.0) -> str:
        proc = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _start_containerd(self, tools: toolchain.Tools) -> None:
        cni = self.workdir / "cni"
        cni.mkdir()
        (cni / "10-loopback.conflist").write_text(
            json.dumps(
                {"cniVersion": "0.4.0", "name": "loopback", "plugins": [{"type": "loopback"}]}
            )
        )
        cri = {
            "sandbox_image": tools.pause_image,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": "0",
            "disable_apparmor": True,
            "enable_selinux": False,
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": {"BinaryName": str(_WRAPPER), "SystemdCgroup": False},
                    }
                },
            },
            "cni": {"bin_dir": str(tools.cni_bin), "conf_dir": str(cni)},
        }
        config = {
            "version": 2,
            "root": str(self.workdir / "containerd-root"),
            "state": str(self.workdir / "containerd-state"),
            "grpc": {"address": str(self.socket)},
            "ttrpc": {"address": f"{self.socket}.ttrpc"},
            "debug": {"address": ""},
            "metrics": {"address": ""},
            "plugins": {
                "io.containerd.grpc.v1.cri": cri,
                "io.containerd.internal.v1.opt": {"path": str(self.workdir / "opt")},
            },
        }
        path = self.workdir / "containerd.toml"
        path.write_text(_toml(config))
        self.procs["containerd"] = _spawn(
            [str(tools.containerd), "--config", str(path), "--log-level", "warn"],
            log_path=self.workdir / "containerd.log",
            before=_new_mount_namespace,
        )
        self._wait("containerd", lambda: self.socket.exists() and bool(self.ctr("version")))

    # --- kubelet ------------------------------------------------------------------------
    def _start_kubelet(self, tools: toolchain.Tools) -> None:
        self.kubelet_port = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.workdir / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
            "fileCheckFrequency": "5s",
            "shutdownGracePeriod": "0s",
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        containerd = self.procs["containerd"]
        self.procs["kubelet"] = _spawn(
            [
                str(tools.kubelet),
                f"--config={path}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                "--node-ip=127.0.0.1",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            log_path=self.workdir / "kubelet.log",
            before=_join_mount_namespace(containerd.pid),
        )

    # --- controller-manager, scheduler --------------------------------------------------
    def _start_controllers(self, tools: toolchain.Tools) -> None:
        kubeconfig = str(self.plane.kubeconfig)
        self.procs["kube-controller-manager"] = _spawn(
            [
                str(tools.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.plane.workdir / 'service-account.key'}",
                f"--root-ca-file={self.plane.ca.cert_path}",
                "--use-service-account-credentials=false",
                "--controllers=*,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving",
                "--concurrent-statefulset-syncs=2",
                "--v=1",
            ],
            log_path=self.workdir / "kube-controller-manager.log",
        )
        self.procs["kube-scheduler"] = _spawn(
            [
                str(tools.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
            log_path=self.workdir / "kube-scheduler.log",
        )

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")
            with contextlib.suppress(OSError, RuntimeError, subprocess.TimeoutExpired):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready in {timeout} s:\n{self.log(name)}")
            time.sleep(0.2)

    def log(self, name: str, chars: int = 4000) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    # --- teardown -----------------------------------------------------------------------
    def _shims(self) -> list[int]:
        """containerd-shim processes of this node (their command line names our socket)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                if (
                    cmdline
                    and b"containerd-shim" in cmdline[0]
                    and str(self.socket).encode() in (b" ".join(cmdline))
                ):
                    pids.append(int(entry.name))
        return pids

    def _container_cgroups(self) -> list[Path]:
        """The cgroups of this node's containers: containerd puts each (cgroupsPerQOS off,
        cgroupfs) at /k8s.io/<container id>; the ids are its task state directories,
        which outlive containerd itself."""
        tasks = self.workdir / "containerd-state" / "io.containerd.runtime.v2.task" / "k8s.io"
        ids = [p.name for p in tasks.iterdir()] if tasks.is_dir() else []
        return [
            c / "k8s.io" / i for c in _controllers() for i in ids if (c / "k8s.io" / i).is_dir()
        ]

    def _cgroup_procs(self) -> set[int]:
        pids: set[int] = set()
        for cgroup in self._container_cgroups():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        return pids

    def _remove_cgroups(self) -> None:
        for cgroup in self._container_cgroups():
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        for controller in _controllers():  # the parent, once no containerd uses it
            with contextlib.suppress(OSError):
                (controller / "k8s.io").rmdir()

    def stop(self) -> None:
        """Stop everything this node started and remove every trace of it."""
        for name in ("kube-scheduler", "kube-controller-manager", "kubelet"):
            _stop(self.procs.get(name))
        # Containers: what the kubelet left running dies with its cgroup's processes.
        self.cgroups = self._container_cgroups()
        deadline = time.monotonic() + 30
        while (pids := self._cgroup_procs()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _stop(self.procs.get("containerd"))
        for pid in self._shims():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while self._shims() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._remove_cgroups()
        # The mount namespace died with its last process; nothing is mounted here on the host.
        leftover = _mounts_under(self.workdir)
        if leftover:
            log.warning("node teardown: unmounting leftovers %s", leftover)
            for mount in sorted(leftover, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What a complete teardown must not leave: processes, cgroups, mounts, files."""
        found = []
        found += [f"shim pid {pid}" for pid in self._shims()]
        found += [f"process {name}" for name, alive in self.alive().items() if alive]
        found += [f"cgroup {c}" for c in self.cgroups if c.exists()]
        found += [f"mount {m}" for m in _mounts_under(self.workdir)]
        if self.workdir.exists():
            found.append(f"directory {self.workdir}")
        return found


def _toml(config: dict[str, object]) -> str:
    """A minimal TOML writer for containerd's config (nested tables, scalars)."""
    lines: list[str] = []

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return json.dumps(v)

    def table(prefix: str, body: dict[str, object]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            key = json.dumps(k) if "." in k else k
            table(f"{prefix}.{key}" if prefix else key, v)

    table("", config)
    return "\n".join(lines) + "\n"
