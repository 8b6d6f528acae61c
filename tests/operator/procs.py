"""Launching ``python -m compute_ctl...`` subprocesses against this checkout.

``PYTHONPATH=<repo root>`` does not work: the top-level ``operator/`` folder shadows the
standard library's ``operator`` while Python starts (``site`` imports ``collections``,
which imports ``operator``), and the interpreter dies before running anything. So the
child gets a ``PYTHONPATH`` holding only a ``compute_ctl`` symlink to this checkout's
package, which resolves ``compute_ctl.compute`` and ``compute_ctl.operator`` here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ROOT", "python_env", "python_module"]

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _pypath() -> Path:
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"compute-ctl-pypath-{tag}"
    path.mkdir(mode=0o755, exist_ok=True)
    link = path / "compute_ctl"
    if not link.is_symlink():
        link.symlink_to(ROOT / "compute_ctl", target_is_directory=True)
    return path


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(_pypath())
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
