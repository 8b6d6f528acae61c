"""Where the tier's binaries come from: ``build.sh`` (kube-apiserver, helm) and Debian's etcd.

Owns finding the binaries and the one-line reason the tier is skipped when they cannot be
had. It builds only through ``build.sh`` (cached by version, a no-op when warm) and
starts no server.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["BUILD_SCRIPT", "Binaries", "Unavailable", "binaries"]

log = logging.getLogger(__name__)

BUILD_SCRIPT = Path(__file__).resolve().parent / "build.sh"
_NO_GO = 3  # build.sh's exit status when Go is missing and a binary is not cached


class Unavailable(Exception):
    """The tier cannot run on this machine; the message is the skip reason."""


@dataclasses.dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    helm: Path
    etcd: Path


@functools.cache
def _build() -> dict[str, Path] | str:
    started = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode == _NO_GO:
        return "Go is not installed: cannot build kube-apiserver (see tests/apiserver/README.md)"
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise RuntimeError(f"tests/apiserver/build.sh failed ({proc.returncode}):\n{tail}")
    elapsed = time.monotonic() - started
    if elapsed > 5:
        log.warning("built the real-API tier's binaries in %.0f s", elapsed)
    paths: dict[str, Path] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        paths[key] = Path(value)
    return paths


def binaries() -> Binaries:
    """The tier's binaries, building them on first use; ``Unavailable`` when they cannot be."""
    built = _build()
    if isinstance(built, str):
        raise Unavailable(built)
    etcd = shutil.which("etcd")
    if etcd is None:
        raise Unavailable("etcd is not installed (apt-get install etcd-server)")
    return Binaries(kube_apiserver=built["kube-apiserver"], helm=built["helm"], etcd=Path(etcd))
