"""The operator end to end on a real API server, with a real compute_ctl and PostgreSQL.

The kmock tier's scenarios (apply, patch, compute failure, invalid spec, delete), plus what
only a real server can show: the operator runs as the shipped ServiceAccount, writes status
through the subresource, watches by a server-side field selector, converges through bursts
of changes, and resumes after a restart without redoing work.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any

import pytest

from compute_ctl.compute import spec as spec_mod
from tests.apiserver import pod as pod_

pytestmark = [pytest.mark.apiserver, pytest.mark.postgres, pytest.mark.slow]


def _hash(pod: pod_.Pod) -> str:
    raw = pod.resources.compute_spec(pod.get())
    return spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(raw))


def _names(pod: pod_.Pod, query: str) -> set[str]:
    return {row[0] for row in pod.catalog(query)}


def _roles(pod: pod_.Pod) -> set[str]:
    return _names(pod, "SELECT rolname FROM pg_roles")


def _databases(pod: pod_.Pod) -> set[str]:
    return _names(pod, "SELECT datname FROM pg_database")


def test_apply_runs_the_compute_and_reports_ready(pod: pod_.Pod) -> None:
    status = pod.wait_reconciled(1)
    assert status["status"] == "running"
    assert status["specHash"] == _hash(pod)
    compute = pod.compute.status()
    assert compute["desired_spec_hash"] == compute["applied_spec_hash"] == status["specHash"]
    assert "app" in _roles(pod)
    assert "app" in _databases(pod)
    assert pod.get()["metadata"]["finalizers"] == [pod.finalizer]
    # Each transition is announced once, even though the create handler and the first
    # periodic reconcile may overlap. Events are posted after the status is written.
    for reason in ("Configured", "Ready"):
        events = pod.wait(functools.partial(pod.events, reason), what=f"a {reason} event")
        assert [e.reason for e in events] == [reason]


def test_status_goes_through_the_status_subresource(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    # The operator's many status writes never touched the spec: generation is still 1.
    assert pod.get()["metadata"]["generation"] == 1
    patches = [
        r for r in pod.operator_requests(resource=pod.resources.plural) if r["verb"] == "patch"
    ]
    status_writes = [r for r in patches if r["objectRef"].get("subresource") == "status"]
    assert status_writes
    assert all(r["responseStatus"]["code"] == 200 for r in status_writes)


def test_patch_reconfigures_the_compute(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    before = pod.compute.status()["desired_generation"]
    pod.resources.patch_spec(pod.name, pod.spec(roles=("app",), databases=("app", "extra")))
    status = pod.wait_reconciled(2)
    assert status["specHash"] == _hash(pod) == pod.compute.status()["applied_spec_hash"]
    assert "extra" in _databases(pod)
    assert pod.compute.status()["desired_generation"] == before + 1


def test_compute_failure_reports_degraded(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    # A database copied from a template that does not exist: admission cannot know, the
    # catalog apply fails in postgres.
    broken = pod.spec()
    template = [{"name": "TEMPLATE", "value": "no_such_template", "vartype": "string"}]
    broken["cluster"]["databases"].append(
        {"name": "orphan", "owner": broken["cluster"]["roles"][0]["name"], "options": template}
    )
    pod.resources.patch_spec(pod.name, broken)

    def degraded() -> dict[str, Any] | None:
        status = pod.status()
        cond = pod.condition(status, "Degraded")
        ok = status.get("observedGeneration") == 2 and cond.get("status") == "True"
        return status if ok else None

    status = pod.wait(degraded, what="Degraded=True", timeout=30)
    # Beyond Neon: the compute keeps serving its last applied spec and retries this one.
    assert status["status"] == "running"
    assert "orphan" in status["lastError"]
    assert pod.condition(status, "Ready")["status"] == "True"
    assert pod.condition(status, "Reconciled")["status"] == "False"
    (event,) = pod.wait(lambda: pod.events("Degraded"), what="a Degraded event")
    assert event.type == "Warning"
    assert "orphan" in pod.compute.status()["pending_error"]


def test_restart_only_settings_are_reported(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    pod.resources.patch_spec(pod.name, pod.spec(settings={"max_connections": "60"}))

    def restart_required() -> dict[str, Any] | None:
        status = pod.status()
        cond = pod.condition(status, "RestartRequired")
        ok = status.get("observedGeneration") == 2 and cond.get("status") == "True"
        return status if ok else None

    status = pod.wait(restart_required, what="RestartRequired=True", timeout=30)
    assert pod.condition(status, "RestartRequired")["reason"] == "PendingRestart"
    assert "max_connections" in status["pendingRestart"]
    assert pod.wait(lambda: pod.events("RestartRequired"), what="a RestartRequired event")


def test_a_direct_configure_is_a_conflict_and_the_resource_wins(pod: pod_.Pod) -> None:
    ours = pod.wait_reconciled(1)["specHash"]
    foreign = pod.spec(roles=("app", "intruder"))
    assert pod.compute.configure(foreign) == 200
    foreign_hash = spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(foreign))

    def conflict() -> dict[str, Any] | None:
        status = pod.status()
        ok = pod.condition(status, "Reconciled").get("reason") == "Conflict"
        return status if ok else None

    status = pod.wait(conflict, what="Reconciled=False/Conflict", timeout=30)
    assert status["conflictSpecHash"] == foreign_hash
    # The next periodic reconcile (every second here) puts the resource's spec back.
    status = pod.wait_reconciled(1)
    assert status.get("conflictSpecHash") is None
    assert pod.compute.status()["desired_spec_hash"] == ours
    assert pod.wait(lambda: pod.events("ConflictResolved"), what="a ConflictResolved event")


def test_invalid_spec_leaves_the_compute_untouched(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    before = pod.compute.status()
    # Valid for the CRD's schema (a string), invalid for the model (32 hex digits).
    pod.resources.patch_spec(pod.name, {"tenant_id": "not-a-tenant"})

    def refused() -> dict[str, Any] | None:
        status = pod.status()
        cond = pod.condition(status, "Reconciled")
        ok = status.get("observedGeneration") == 2 and cond.get("reason") == "Invalid"
        return status if ok else None

    status = pod.wait(refused, what="Reconciled=False/Invalid", timeout=30)
    assert "tenant_id" in status["lastError"]
    assert pod.condition(status, "Ready")["status"] == "True"  # still serving the old spec
    assert pod.wait(lambda: pod.events("Invalid"), what="an Invalid event")
    after = pod.compute.status()
    assert after["desired_generation"] == before["desired_generation"]
    assert after["applied_spec_hash"] == before["applied_spec_hash"]
    # Back to the old spec: reconciled again, and nothing to push (same hash).
    pod.resources.patch_spec(pod.name, {"tenant_id": None})
    pod.wait_reconciled(3)
    assert pod.compute.status()["desired_generation"] == before["desired_generation"]


def test_delete_terminates_the_compute(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    pod.resources.delete(pod.name)
    pod.wait(lambda: not pod.resources.exists(pod.name), what="the resource to go")
    (event,) = pod.events("Terminated")
    assert "terminated" in event.message
    status = pod.compute.try_status()
    assert status is None or status["status"] == "terminated"


def test_restart_resumes_without_duplicate_work(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    first = pod.compute.status()["desired_generation"]
    assert pod.operator.stop() == 0
    before = {e.metadata.name for e in pod.events()}
    assert pod.get()["metadata"]["finalizers"] == [pod.finalizer]

    # A change while the operator is away is applied once when it comes back...
    pod.resources.patch_spec(pod.name, pod.spec(databases=("app", "while_down")))
    pod.operator.start(resync_interval=1.0)
    pod.wait_reconciled(2)
    assert pod.compute.status()["desired_generation"] == first + 1
    # ...and the next change once more: the resume pushed nothing on its own.
    pod.resources.patch_spec(pod.name, pod.spec(databases=("app", "after")))
    pod.wait_reconciled(3)
    assert pod.compute.status()["desired_generation"] == first + 2

    # Since the restart: one Configured per change, and no other news (Ready never dropped).
    # Events are posted after the status is written.
    def since() -> list[str]:
        return sorted(e.reason for e in pod.events() if e.metadata.name not in before)

    pod.wait(lambda: since().count("Configured") >= 2, what="two Configured events")
    assert since() == ["Configured", "Configured"]
    assert {"while_down", "after"} <= _databases(pod)


def test_a_burst_of_changes_converges(pod: pod_.Pod) -> None:
    """Changes racing the operator from its start still end on the last spec.

    kopf adds its finalizer with a JSON patch guarded by a ``test`` of resourceVersion;
    a write in between makes the server refuse it (422, see test_api_semantics), and
    kopf must retry on the next event. Writing continuously while the operator starts
    makes that race likely; whichever way it goes, the end state must be the last spec.
    """
    generation = 1
    for i in range(200):  # until the finalizer lands, racing it
        obj = pod.resources.patch_spec(pod.name, pod.spec(roles=("app", f"burst{i}")))
        generation = obj["metadata"]["generation"]
        if obj["metadata"].get("finalizers") and i >= 5:
            break
    status = pod.wait_reconciled(generation)
    assert status["specHash"] == _hash(pod) == pod.compute.status()["applied_spec_hash"]
    assert f"burst{generation - 2}" in _roles(pod)
    assert pod.get()["metadata"]["finalizers"] == [pod.finalizer]
    refused = [
        r
        for r in pod.operator_requests(resource=pod.resources.plural)
        if r["responseStatus"]["code"] == 422
    ]
    print(f"{len(refused)} of the operator's guarded patches were refused and retried")


def test_the_operator_watches_only_its_resource(pod: pod_.Pod) -> None:
    other = pod.resources.create("other", pod.spec())
    pod.wait_reconciled(1)
    pod.resources.patch_spec("other", {"suspend_timeout_seconds": 7})
    pod.resources.patch_spec(pod.name, pod.spec(databases=("app", "second")))
    pod.wait_reconciled(2)
    untouched = pod.resources.get("other")
    assert "status" not in untouched
    assert "finalizers" not in untouched["metadata"]
    assert untouched["metadata"].get("annotations") == other["metadata"].get("annotations")
    # Every list and watch the operator made on the resource asked the server to filter.
    reads = [
        r
        for r in pod.operator_requests(resource=pod.resources.plural)
        if r["verb"] in ("list", "watch")
    ]
    assert reads
    selector = urllib.parse.quote(f"metadata.name={pod.name}", safe="")
    for request in reads:
        assert f"fieldSelector={selector}" in request["requestURI"], request["requestURI"]
