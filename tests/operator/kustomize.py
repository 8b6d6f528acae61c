"""A tiny ``kubectl kustomize`` for our base: the ``resources`` list, nothing else.

kubectl is not part of the toolchain, so the tests render ``manifests/`` with this and,
where a real kustomize is at hand (``kubectl kustomize``), check that both agree. Any
kustomization feature beyond plain resource files (and transformer configurations, which
only act on renames) is refused, so the base cannot grow a feature that this renderer
would silently ignore.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = ["UnsupportedKustomization", "kubectl_kustomize", "render"]

# ``configurations`` (transformer configs: our nameReference for renames) change nothing
# without a namePrefix/nameSuffix, which this renderer refuses.
_ALLOWED = frozenset({"apiVersion", "kind", "resources", "configurations"})


class UnsupportedKustomization(ValueError):
    pass


def render(base: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    extra = set(kustomization) - _ALLOWED
    if extra:
        raise UnsupportedKustomization(f"unsupported kustomization fields: {sorted(extra)}")
    if kustomization.get("kind") != "Kustomization":
        raise UnsupportedKustomization("kind must be Kustomization")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = base / entry
        if path.is_dir():
            docs += render(path)
            continue
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def kubectl_kustomize(base: Path) -> list[dict[str, Any]] | None:
    """The real renderer's output, or ``None`` when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    proc = subprocess.run(
        [kubectl, "kustomize", str(base)], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
