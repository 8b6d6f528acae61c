"""Scenarios b and h of issue 14 on real pods: what issue 13's hardening must fix (c is in
test_credentials.py).

Each is written against main as merged. Where a fix has not landed the test is
``xfail(strict=True)`` naming the issue 13 defect: it turns red (XPASS) once the fix lands,
and the mark must then go.
"""

from __future__ import annotations

import time

import pytest

from tests.cluster import held
from tests.cluster.cluster import Namespace, finish, wait_for
from tests.cluster.compute import (
    TEARDOWN_BOUND,
    Compute,
    installed,
    spec,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_h_compute_ctl_container_has_no_service_account_token(shared: Compute) -> None:
    compute, kube = shared, shared.ns
    containers = {c["name"]: c for c in kube.pod(compute.pod)["spec"]["containers"]}
    mounts = [m["mountPath"] for m in containers["compute-ctl"].get("volumeMounts", [])]
    assert not any(m.startswith("/var/run/secrets/kubernetes.io") for m in mounts), mounts
    listing = kube.sh(compute.pod, "compute-ctl", f"ls {TOKEN_DIR}/token 2>/dev/null || echo none")
    assert listing.strip() == "none"
    # The operator still has its token (it talks to the API server).
    listing = kube.sh(compute.pod, "operator", "ls /var/run/secrets/kubernetes.io/*/token")
    assert "token" in listing


def _nothing_left(kube: Namespace) -> bool:
    """No pod, ComputeSpec, Job, hook ServiceAccount or Role of the release is left."""
    kinds = "pods,computespec,jobs,statefulsets,roles,rolebindings"
    return kube.kubectl("get", kinds, "-o", "name").strip() == ""


def test_b_helm_uninstall_terminates_and_leaves_nothing(kube: Namespace) -> None:
    """A plain ``helm uninstall``: the chart's pre-delete hook deletes the resource first,
    while the operator still has its pod, token and Role (issue 13 defect 2)."""
    compute = installed(kube, "b")
    started = time.monotonic()
    out = kube.helm("uninstall", compute.release, "--wait", "--timeout=120s", timeout=150)
    assert "uninstalled" in out
    assert time.monotonic() - started < TEARDOWN_BOUND
    terminated = [e for e in kube.events(compute.name) if e["reason"] == "Terminated"]
    assert len(terminated) == 1, kube.events(compute.name)
    assert "terminated" in terminated[0]["message"]
    wait_for(lambda: _nothing_left(kube), what="nothing left after helm uninstall", timeout=60)


def test_b_helm_uninstall_while_the_compute_is_starting(kube: Namespace) -> None:
    """``helm uninstall`` of a compute still starting: its start is held (a failpoint)
    with postgres running. The uninstall waits while it is held, then the compute is
    terminated (not left running behind a deleted resource) and nothing is left."""
    env = [{"name": k, "value": v} for k, v in held.ENV.items()]
    compute = Compute(kube, "bstart", extra={"computeCtl": {"extraEnv": env}})
    compute.install(spec(compute.ports, roles=("app",), databases=("app",)))
    held.wait_held(kube, compute.name, compute.pod)
    helm = [str(kube.cluster.tools.helm), "-n", kube.name]
    with kube.cluster.background([*helm, "uninstall", compute.release, "--wait"]) as uninstall:
        held.wait_deleting(kube, compute.name)  # by the pre-delete hook
        assert uninstall.poll() is None, uninstall.communicate()  # it waits for the compute
        assert kube.get_or_none("pod", compute.pod) is not None
        assert "Ready" not in [e["reason"] for e in kube.events(compute.name)]
        released = time.monotonic()
        held.release(kube, compute.pod, compute.ports.internal)
        finish(uninstall)
    assert time.monotonic() - released < TEARDOWN_BOUND
    reasons = [e["reason"] for e in kube.events(compute.name)]
    assert "Terminated" in reasons, reasons
    assert "TerminateFailed" not in reasons, reasons
    wait_for(lambda: _nothing_left(kube), what="nothing left after helm uninstall", timeout=60)
