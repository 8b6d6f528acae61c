"""What the operator process does not load: the Kubernetes client libraries it never calls
(``operator.clientlibs``), and psycopg (its bundled libpq and OpenSSL, about 9 MB of
resident memory), which admitting a spec does not need (docs/performance.md, "Memory per
pod")."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.operator import procs

_PROBE = """
import json, sys
from compute_ctl.compute import admission
from compute_ctl.operator import __main__, clientlibs
clientlibs.skip()
import kopf
from compute_ctl.operator import handlers
from tests.support import specs
admission.admit_spec(specs.local_spec(port=5432, roles=["app"]), rules=admission.Rules())
watched = set(clientlibs.UNUSED) | {"psycopg"}
loaded = sorted({n.split(".")[0] for n, m in sys.modules.items() if m is not None} & watched)
print(json.dumps({"loaded": loaded, "registry": type(kopf.OperatorRegistry()).__name__}))
"""


def _python(code: str) -> bytes:
    """Standard output of ``code`` in a fresh interpreter (a process's imports are global)."""
    env = procs.python_env({"PYTHONPATH": f"{procs.python_env()['PYTHONPATH']}:{procs.ROOT}"})
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def test_the_operator_loads_only_what_it_calls() -> None:
    report = json.loads(_python(_PROBE))
    assert report == {"loaded": [], "registry": "OperatorRegistry"}


def test_without_skipping_kopf_would_load_kubernetes() -> None:
    """The rule bites: kubernetes is installed, and kopf imports it when allowed to."""
    assert _python("import sys, kopf; print('kubernetes' in sys.modules)").strip() == b"True"
