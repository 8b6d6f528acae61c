"""Scenarios b and h of issue 14 on real pods: what issue 13's hardening must fix (c is in
test_credentials.py).

Each is written against main as merged. Where a fix has not landed the test is
``xfail(strict=True)`` naming the issue 13 defect: it turns red (XPASS) once the fix lands,
and the mark must then go.
"""

from __future__ import annotations

import pytest

from tests.cluster.cluster import Namespace, wait_for
from tests.cluster.compute import INSTALL_BOUND, Compute, installed, spec

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


def _nothing_left(kube: Namespace) -> bool:
    """No pod, ComputeSpec, Job, hook ServiceAccount or Role of the release is left."""
    kinds = "pods,computespec,jobs,statefulsets,roles,rolebindings"
    return kube.kubectl("get", kinds, "-o", "name").strip() == ""


def test_b_helm_uninstall_terminates_and_leaves_nothing(kube: Namespace) -> None:
    """A plain ``helm uninstall``: the chart's pre-delete hook deletes the resource first,
    while the operator still has its pod, token and Role (issue 13 defect 2)."""
    compute = installed(kube, "b")
    out = kube.helm("uninstall", compute.release, "--wait", "--timeout=120s", timeout=150)
    assert "uninstalled" in out
    terminated = [e for e in kube.events(compute.name) if e["reason"] == "Terminated"]
    assert len(terminated) == 1, kube.events(compute.name)
    assert "terminated" in terminated[0]["message"]
    wait_for(lambda: _nothing_left(kube), what="nothing left after helm uninstall", timeout=60)


def test_b_helm_uninstall_right_after_install(kube: Namespace) -> None:
    """Uninstalled as soon as the operator has taken the resource (its finalizer is on),
    while the compute is still starting: the uninstall still finishes, the compute is
    terminated, and nothing is left Terminating."""
    compute = Compute(kube, "bstart")
    compute.install(spec(compute.ports, roles=("app",), databases=("app",)))

    def taken() -> bool:
        obj = kube.get_or_none("computespec", compute.name) or {}
        return bool(obj.get("metadata", {}).get("finalizers"))

    wait_for(taken, what="the operator's finalizer on the resource", timeout=INSTALL_BOUND)
    kube.helm("uninstall", compute.release, "--wait", "--timeout=120s", timeout=150)
    reasons = [e["reason"] for e in kube.events(compute.name)]
    assert "Terminated" in reasons, reasons
    assert "TerminateFailed" not in reasons, reasons
    wait_for(lambda: _nothing_left(kube), what="nothing left after helm uninstall", timeout=60)
