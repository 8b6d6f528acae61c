"""The operator process never loads the Kubernetes client libraries it does not call."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.operator import procs

_PROBE = """
import json, sys
from compute_ctl.operator import clientlibs
clientlibs.skip()
import kopf
from compute_ctl.operator import handlers
loaded = sorted(
    name for name, module in sys.modules.items()
    if module is not None and name.split(".")[0] in clientlibs.UNUSED
)
print(json.dumps({"loaded": loaded, "registry": type(kopf.OperatorRegistry()).__name__}))
"""


def _python(code: str) -> bytes:
    """Standard output of ``code`` in a fresh interpreter (a process's imports are global)."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=procs.python_env(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def test_kopf_runs_without_the_client_libraries() -> None:
    report = json.loads(_python(_PROBE))
    assert report == {"loaded": [], "registry": "OperatorRegistry"}


def test_without_skipping_kopf_would_load_kubernetes() -> None:
    """The rule bites: kubernetes is installed, and kopf imports it when allowed to."""
    assert _python("import sys, kopf; print('kubernetes' in sys.modules)").strip() == b"True"
