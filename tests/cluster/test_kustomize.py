"""Scenario b of issue 14 for kustomize: docs/operator.md's quickstart on real pods.

Each step's shell block is read from the document (``scripts/doc-commands``) and run
verbatim, with one substitution: ``-k manifests/`` becomes ``-k OVERLAY``, the per-test
overlay (``overlay.py``) that puts the pod on the node's network with free loopback
ports. The CRD step (``manifests/crd/``) runs as written. Each test has its own
namespace, so the base's fixed name ``compute-1`` is the documented one.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import overlay
from tests.cluster.cluster import Namespace, Ports, wait_for
from tests.cluster.compute import INSTALL_BOUND, TEARDOWN_BOUND

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operator.md"
NAME = "compute-1"


def step(kube: Namespace, name: str, base: Path) -> str:
    """Run the document's step ``name`` in ``kube``'s namespace, on the overlay ``base``."""
    script = subprocess.run(
        [str(REPO / "scripts" / "doc-commands"), str(DOC), name],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    script = script.replace("-k manifests/ ", f"-k {base} ")
    proc = subprocess.run(
        ["sh", "-eu", "-c", script],
        env=kube.cluster.env() | {"NS": kube.name},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"step {name} failed:\n{script}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _nothing_left(kube: Namespace) -> bool:
    kinds = "pods,computespec,statefulsets,services,roles,rolebindings,secrets,serviceaccounts"
    return kube.kubectl("get", kinds, "-o", "name").split() == ["serviceaccount/default"]


def _terminated_once(kube: Namespace) -> str:
    events = kube.events(NAME)
    reasons = [e["reason"] for e in events]
    assert reasons.count("Terminated") == 1, reasons
    assert "TerminateFailed" not in reasons, reasons
    message: str = next(e["message"] for e in events if e["reason"] == "Terminated")
    return message


def test_b_kustomize_install_change_delete_teardown(kube: Namespace) -> None:
    base = overlay.write(kube.cluster, Ports.free(), kube.tmp_path / "overlay")
    step(kube, "install", base)  # one run on an empty namespace (issue 13 defect 3)
    try:
        out = step(kube, "check", base)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics()}") from e
    assert NAME in out
    assert "running" in out
    assert step(kube, "connect", base).split()[-3:] == ["1", "(1", "row)"]
    step(kube, "change", base)
    roles = kube.kubectl(
        "exec", f"{NAME}-0", "-c", "compute-ctl", "--", "psql", "-h",
        "/var/lib/postgresql/data/pgdata", "-U", "cloud_admin", "-d", "postgres", "-AtXc",
        "SELECT rolname FROM pg_roles WHERE rolname = 'reader'",
    )  # fmt: skip
    assert roles.split() == ["reader"]

    started = time.monotonic()
    step(kube, "delete", base)
    assert time.monotonic() - started < TEARDOWN_BOUND
    assert "terminated" in _terminated_once(kube)
    step(kube, "teardown", base)
    wait_for(lambda: _nothing_left(kube), what="nothing left after the teardown", timeout=60)


def test_b_kustomize_teardown_right_after_install(kube: Namespace) -> None:
    """The documented teardown as soon as the operator holds the resource (its finalizer
    is on), the compute still starting: it finishes, the compute is terminated."""
    base = overlay.write(kube.cluster, Ports.free(), kube.tmp_path / "overlay")
    step(kube, "install", base)

    def taken() -> bool:
        obj = kube.get_or_none("computespec", NAME) or {}
        return bool(obj.get("metadata", {}).get("finalizers"))

    wait_for(taken, what="the operator's finalizer on the resource", timeout=INSTALL_BOUND)
    started = time.monotonic()
    step(kube, "delete", base)
    assert time.monotonic() - started < TEARDOWN_BOUND
    step(kube, "teardown", base)
    _terminated_once(kube)
    wait_for(lambda: _nothing_left(kube), what="nothing left after the teardown", timeout=60)
