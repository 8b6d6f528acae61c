"""A compute whose start is held, for teardowns "while the compute is still starting".

compute_ctl runs with ``FAILPOINTS=before-apply=pause``: it starts postgres, then waits
before applying the spec (status ``init``, never Ready) until the failpoint is set off
through the internal port's ``/failpoints`` (Neon's internal route, loopback only: reached
with ``kubectl exec`` in the compute_ctl container). Asserts nothing.
"""

from __future__ import annotations

from tests.cluster.cluster import Namespace, wait_for
from tests.cluster.compute import INSTALL_BOUND, PGDATA

__all__ = ["ENV", "release", "wait_deleting", "wait_held"]

ENV = {"FAILPOINTS": "before-apply=pause"}
_RELEASE = (
    "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:{port}/failpoints',"
    ' data=b\'[{{"name": "before-apply", "actions": "off"}}]\', method=\'POST\','
    " headers={{'Content-Type': 'application/json'}}), timeout=30)"
)


def wait_held(kube: Namespace, name: str, pod: str) -> None:
    """Until the operator holds the resource (its finalizer) and postgres runs."""

    def held() -> bool:
        obj = kube.get_or_none("computespec", name) or {}
        postgres = kube.sh(
            pod, "compute-ctl", f"test -f {PGDATA}/postmaster.pid && echo yes", check=False
        )
        return bool(obj.get("metadata", {}).get("finalizers")) and postgres.strip() == "yes"

    wait_for(held, what="the start held with postgres running", timeout=INSTALL_BOUND)


def wait_deleting(kube: Namespace, name: str) -> None:
    """Until the resource is being deleted (and, its finalizer on, still there)."""

    def deleting() -> bool:
        obj = kube.get_or_none("computespec", name) or {}
        return "deletionTimestamp" in obj.get("metadata", {})

    wait_for(deleting, what=f"computespec {name} being deleted", timeout=60)


def release(kube: Namespace, pod: str, internal_port: int) -> None:
    kube.exec(pod, "compute-ctl", "python3", "-c", _RELEASE.format(port=internal_port))
