"""A documented step's shell commands, read from the document by ``scripts/doc-commands``.

The quickstart tests (API-server tier, cluster tier) run what the documents say, so the
documents cannot go stale; this is the one place that asks the script for a step.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def script(doc: Path, name: str) -> str:
    """The shell block(s) of ``doc``'s step ``name``, as written."""
    return subprocess.run(
        [str(REPO / "scripts" / "doc-commands"), str(doc), name],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
