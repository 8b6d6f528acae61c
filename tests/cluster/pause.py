"""The pause (sandbox) image of the one-node cluster, made locally: no registry.

Owns compiling ``pause.c`` static with gcc and writing a one-layer docker-archive that
``ctr images import`` reads. Cached by the hash of the source under the cache directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

__all__ = ["IMAGE", "build"]

IMAGE = "localhost/pause:compute-ctl"
_SOURCE = Path(__file__).with_name("pause.c")


def _layer(binary: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size = len(binary)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(binary))
    return buffer.getvalue()


def build(cache: Path) -> Path:
    """The docker-archive of the pause image (built on first use)."""
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source).hexdigest()[:16]
    archive = cache / f"pause-{key}.tar"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(_SOURCE)], check=True)
        layer = _layer(binary.read_bytes())
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"],
            },
            "history": [{"created_by": "tests/cluster/pause.py"}],
        }
        config_bytes = json.dumps(config).encode()
        manifest = [{"Config": "config.json", "RepoTags": [IMAGE], "Layers": ["layer.tar"]}]
        partial = Path(tmp) / "pause.tar"
        with tarfile.open(partial, "w") as tar:
            for name, data in (
                ("config.json", config_bytes),
                ("layer.tar", layer),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        partial.rename(archive)
    return archive
