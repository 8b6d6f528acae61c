"""What the one-node cluster tier needs, and the one-line reason when it cannot run here.

Owns finding (and building, through the cached scripts) the tier's parts: the Kubernetes
binaries (``tests/apiserver/build.sh cluster``), Debian's containerd, runc, ctr and CNI
plugins, the compute image (``scripts/build-image``) and the pause image. It starts nothing.
The tier skips only where Go (with a cold cache), root or namespaces are missing.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.apiserver import toolchain as apiserver_toolchain
from tests.cluster import pause

__all__ = ["CACHE", "Tools", "Unavailable", "tools"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("COMPUTE_CTL_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compute-ctl"
)
_NO_GO = 3
_CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))


class Unavailable(Exception):
    """The tier cannot run on this machine; the message is the skip reason."""


@dataclasses.dataclass(frozen=True)
class Tools:
    kube_apiserver: Path
    helm: Path
    etcd: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kubectl: Path
    containerd: Path
    cni_bin: Path
    image: str
    image_archive: Path
    image_size_mb: int
    pause_image: str
    pause_archive: Path

    @property
    def apiserver(self) -> apiserver_toolchain.Binaries:
        return apiserver_toolchain.Binaries(
            kube_apiserver=self.kube_apiserver, helm=self.helm, etcd=self.etcd
        )


def _run_script(argv: list[str], what: str) -> dict[str, str]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode == _NO_GO:
        raise Unavailable(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{tail}")
    if (elapsed := time.monotonic() - started) > 5:
        log.warning("%s took %.0f s", what, elapsed)
    return dict(line.partition("=")[::2] for line in proc.stdout.splitlines() if "=" in line)


def _can_unshare_mounts() -> bool:
    pid = os.fork()
    if pid == 0:  # the check must not change this process's namespaces
        ok = ctypes.CDLL(None, use_errno=True).unshare(0x00020000) == 0
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@functools.cache
def tools() -> Tools:
    """Every part, built or found on first use; ``Unavailable`` when the tier cannot run."""
    if os.geteuid() != 0:
        raise Unavailable("the one-node cluster needs root (containerd, runc, mounts)")
    if not _can_unshare_mounts():
        raise Unavailable("cannot create a mount namespace here (containerd's private mounts)")
    missing = [
        t
        for t in ("containerd", "runc", "ctr", "buildah", "mmdebstrap", "gcc")
        if shutil.which(t) is None
    ]
    cni_bin = next((d for d in _CNI_DIRS if (d / "loopback").exists()), None)
    if missing or cni_bin is None:
        raise RuntimeError(
            f"missing {missing or 'CNI plugins'}: run COMPUTE_CTL_SETUP_TEST=1 scripts/setup"
        )
    built = _run_script(["bash", str(apiserver_toolchain.BUILD_SCRIPT), "cluster"], "build.sh")
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is missing: run COMPUTE_CTL_SETUP_TEST=1 scripts/setup")
    image = _run_script([str(REPO / "scripts" / "build-image")], "scripts/build-image")
    return Tools(
        kube_apiserver=Path(built["kube-apiserver"]),
        helm=Path(built["helm"]),
        etcd=Path(etcd),
        kube_controller_manager=Path(built["kube-controller-manager"]),
        kube_scheduler=Path(built["kube-scheduler"]),
        kubelet=Path(built["kubelet"]),
        kubectl=Path(built["kubectl"]),
        containerd=Path(str(shutil.which("containerd"))),
        cni_bin=cni_bin,
        image=image["image"],
        image_archive=Path(image["archive"]),
        image_size_mb=int(image["size_mb"]),
        pause_image=pause.IMAGE,
        pause_archive=pause.build(CACHE / "pause"),
    )
