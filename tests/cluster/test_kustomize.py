"""Scenario b of issue 14 for kustomize: docs/operator.md's quickstart on real pods.

Each step's shell block is read from the document (``scripts/doc-commands``) and run
verbatim, with one substitution: ``-k manifests/`` becomes ``-k OVERLAY``, the per-test
overlay (``overlay.py``) that puts the pod on the node's network with free loopback
ports. The CRD step (``manifests/crd/``) runs as written. Each test has its own
namespace, so the base's fixed name ``compute-1`` is the documented one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster import held, overlay
from tests.cluster.cluster import Namespace, Ports, finish, wait_for
from tests.cluster.compute import PGDATA, TEARDOWN_BOUND
from tests.support import docsteps

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operator.md"
NAME = "compute-1"


def script(name: str, base: Path) -> str:
    """The document's step ``name``, on the overlay ``base``."""
    return docsteps.script(DOC, name).replace("-k manifests/ ", f"-k {base} ")


def step(kube: Namespace, name: str, base: Path) -> str:
    """Step ``name`` run to its end in ``kube``'s namespace (``sh -eu``); its output."""
    with kube.cluster.background(
        ["sh", "-eu", "-c", script(name, base)], env={"NS": kube.name}
    ) as proc:
        return finish(proc, timeout=240)


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
    roles = kube.exec(
        f"{NAME}-0", "compute-ctl", "psql", "-h", PGDATA, "-U", "cloud_admin", "-d", "postgres",
        "-AtXc", "SELECT rolname FROM pg_roles WHERE rolname = 'reader'",
    )  # fmt: skip
    assert roles.split() == ["reader"]

    started = time.monotonic()
    step(kube, "delete", base)
    assert time.monotonic() - started < TEARDOWN_BOUND
    assert "terminated" in _terminated_once(kube)
    step(kube, "teardown", base)
    wait_for(lambda: _nothing_left(kube), what="nothing left after the teardown", timeout=60)


def test_b_kustomize_teardown_while_the_compute_is_starting(kube: Namespace) -> None:
    """The documented teardown of a compute still starting: its start is held (a
    failpoint) with postgres running. ``kubectl delete`` waits while it is held; then the
    compute is terminated (not left running behind a deleted resource), nothing is left."""
    ports = Ports.free()
    base = overlay.write(kube.cluster, ports, kube.tmp_path / "overlay", compute_env=held.ENV)
    step(kube, "install", base)
    held.wait_held(kube, NAME, f"{NAME}-0")
    delete = ["sh", "-eu", "-c", script("delete", base)]
    with kube.cluster.background(delete, env={"NS": kube.name}) as deleting:
        held.wait_deleting(kube, NAME)
        assert deleting.poll() is None, deleting.communicate()  # it waits for the compute
        assert "Ready" not in [e["reason"] for e in kube.events(NAME)]
        released = time.monotonic()
        held.release(kube, f"{NAME}-0", ports.internal)
        finish(deleting)
    assert time.monotonic() - released < TEARDOWN_BOUND
    _terminated_once(kube)
    step(kube, "teardown", base)
    wait_for(lambda: _nothing_left(kube), what="nothing left after the teardown", timeout=60)
