"""The operator's key pair for a test compute, made by the shipped ``scripts/compute-keys``.

``make(workdir, name)`` runs the script as a user would, and unpacks the Secret it prints
into ``config.json`` (compute_ctl's ``--config``, the JWKS) and ``operator.pem`` (the
operator's ``--key-file``). ``bearer`` signs a token as the operator does.
"""

from __future__ import annotations

import base64
import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import yaml

from compute_ctl.operator import credentials

__all__ = ["Keys", "bearer", "make", "secret", "unpack"]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compute-keys"


@dataclasses.dataclass(frozen=True)
class Keys:
    config: Path  # compute_ctl's --config (the JWKS, no spec)
    private: Path  # the operator's --key-file


def secret(name: str) -> dict[str, Any]:
    """The Secret ``scripts/compute-keys NAME`` prints."""
    out = subprocess.run([str(SCRIPT), name], check=True, capture_output=True, timeout=30)
    document: dict[str, Any] = yaml.safe_load(out.stdout)
    return document


def make(workdir: Path, name: str) -> Keys:
    return unpack(workdir, secret(name)["data"])


def unpack(workdir: Path, data: dict[str, str]) -> Keys:
    """The two halves of a keys Secret's ``data`` (base64), as files."""
    keys = Keys(config=workdir / "config.json", private=workdir / "operator.pem")
    keys.config.write_bytes(base64.b64decode(data["config.json"]))
    keys.private.write_bytes(base64.b64decode(data["operator.pem"]))
    keys.private.chmod(0o600)
    return keys


def bearer(keys: Keys, compute_id: str) -> dict[str, str]:
    return credentials.TokenSource(keys.private, compute_id=compute_id).header()
