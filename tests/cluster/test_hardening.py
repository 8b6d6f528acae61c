"""Scenarios b and h of issue 14 on real pods: what issue 13's hardening must fix (c is in
test_credentials.py).

Each is written against main as merged. Where the fix has not landed the test is
``xfail(strict=True)`` naming the issue 13 defect: it turns red (XPASS) once the fix lands,
and the mark must then go.
"""

from __future__ import annotations

import pytest

from tests.cluster.cluster import Namespace, wait_for
from tests.cluster.compute import Compute, installed

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_h_compute_ctl_container_has_no_service_account_token(shared: Compute) -> None:
    compute, kube = shared, shared.ns
    containers = {c["name"]: c for c in kube.pod(compute.pod)["spec"]["containers"]}
    mounts = [m["mountPath"] for m in containers["compute-ctl"].get("volumeMounts", [])]
    assert not any(m.startswith("/var/run/secrets/kubernetes.io") for m in mounts), mounts
    listing = kube.kubectl(
        "exec",
        compute.pod,
        "-c",
        "compute-ctl",
        "--",
        "sh",
        "-c",
        f"ls {TOKEN_DIR}/token 2>/dev/null || echo none",
    )
    assert listing.strip() == "none"
    # The operator still has its token (it talks to the API server).
    listing = kube.kubectl(
        "exec",
        compute.pod,
        "-c",
        "operator",
        "--",
        "sh",
        "-c",
        "ls /var/run/secrets/kubernetes.io/*/token",
    )
    assert "token" in listing


def test_b_documented_teardown_terminates_and_leaves_nothing(kube: Namespace) -> None:
    """The documented order (docs/operator.md, docs/quickstart.md): the resource first, so
    its operator terminates the compute and releases the finalizer; then the release."""
    compute = installed(kube, "bdoc")
    kube.kubectl("delete", "computespec", compute.name, "--timeout=120s", timeout=150)
    reasons = [e["reason"] for e in kube.events(compute.name)]
    assert "Terminated" in reasons, reasons
    kube.helm("uninstall", compute.release, "--wait", "--timeout=90s", timeout=120)
    wait_for(
        lambda: kube.kubectl("get", "pods,computespec", "-o", "name").strip() == "",
        what="nothing left",
        timeout=60,
    )


@pytest.mark.xfail(
    strict=True,
    reason="issue 13 defect 2 (kept as documented): a plain helm uninstall deletes the "
    "StatefulSet and RBAC before the resource, whose finalizer then stays (Terminating)",
)
def test_b_helm_uninstall_leaves_nothing_terminating(kube: Namespace) -> None:
    compute = installed(kube, "b")
    kube.helm("uninstall", compute.release, "--wait", "--timeout=60s", timeout=90)

    def gone() -> bool:
        return kube.get_or_none("computespec", compute.name) is None

    wait_for(gone, what="the ComputeSpec gone after helm uninstall", timeout=45)
    assert kube.kubectl("get", "pods", "-o", "name").strip() == ""
