"""Scenarios b and h of issue 14 on real pods: what issue 13's hardening must fix (c is in
test_credentials.py).

Each is written against main as merged. Where a fix has not landed the test is
``xfail(strict=True)`` naming the issue 13 defect: it turns red (XPASS) once the fix lands,
and the mark must then go.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.cluster.cluster import Namespace, wait_for
from tests.cluster.compute import (
    INSTALL_BOUND,
    PGDATA,
    TEARDOWN_BOUND,
    Compute,
    installed,
    spec,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# compute_ctl's start held before the spec is applied (postgres runs, status init), and
# its release through the internal port's /failpoints (Neon's internal route).
HOLD_START = {"name": "FAILPOINTS", "value": "before-apply=pause"}
RELEASE_START = (
    "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:{port}/failpoints',"
    ' data=b\'[{{"name": "before-apply", "actions": "off"}}]\', method=\'POST\','
    " headers={{'Content-Type': 'application/json'}}), timeout=30)"
)


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
    compute = Compute(kube, "bstart", extra={"computeCtl": {"extraEnv": [HOLD_START]}})
    compute.install(spec(compute.ports, roles=("app",), databases=("app",)))

    def held() -> bool:
        obj = kube.get_or_none("computespec", compute.name) or {}
        postgres = kube.kubectl(
            "exec", compute.pod, "-c", "compute-ctl", "--", "sh", "-c",
            f"test -f {PGDATA}/postmaster.pid && echo yes", check=False,
        )  # fmt: skip
        return bool(obj.get("metadata", {}).get("finalizers")) and postgres.strip() == "yes"

    wait_for(held, what="the start held with postgres running", timeout=INSTALL_BOUND)
    uninstall = subprocess.Popen(
        [str(kube.cluster.tools.helm), "-n", kube.name, "uninstall", compute.release,
         "--wait", "--timeout=150s"],
        env=kube.cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def deleting() -> bool:
            obj = kube.get_or_none("computespec", compute.name) or {}
            return "deletionTimestamp" in obj.get("metadata", {})

        wait_for(deleting, what="the pre-delete hook deleting the resource", timeout=60)
        assert uninstall.poll() is None, uninstall.communicate()  # it waits for the compute
        assert kube.get_or_none("pod", compute.pod) is not None
        assert "Ready" not in [e["reason"] for e in kube.events(compute.name)]
        released = time.monotonic()
        kube.kubectl(
            "exec", compute.pod, "-c", "compute-ctl", "--", "python3", "-c",
            RELEASE_START.format(port=compute.ports.internal),
        )  # fmt: skip
        out, _ = uninstall.communicate(timeout=180)
    finally:
        if uninstall.poll() is None:
            uninstall.kill()
    assert uninstall.returncode == 0, out
    assert time.monotonic() - released < TEARDOWN_BOUND
    reasons = [e["reason"] for e in kube.events(compute.name)]
    assert "Terminated" in reasons, reasons
    assert "TerminateFailed" not in reasons, reasons
    wait_for(lambda: _nothing_left(kube), what="nothing left after helm uninstall", timeout=60)
