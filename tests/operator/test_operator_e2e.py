"""The operator end to end: kmock as the API, a real compute_ctl and PostgreSQL behind it.

Each test runs the operator as its own process against kmock and a fresh compute_ctl
(spec-less, so it waits in ``empty`` for the operator's ``/configure``), and checks the
resource's status and Events and, through SQL and ``GET /status``, the compute itself.
"""

from __future__ import annotations

from typing import Any

import kmock
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from compute_ctl.compute import spec as spec_mod
from tests import invalid_specs
from tests.operator import emulator, harness
from tests.operator.harness import Api, Compute, Operator, condition

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.kmock(cls=emulator.Emulator)]


def hash_of(spec: dict[str, Any]) -> str:
    return spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(spec))


def spec_for(compute: Compute, **changes: Any) -> dict[str, Any]:
    return harness.compute_spec(port=compute.pg_port, **changes)


def settled(generation: int, spec_hash: str) -> harness.Predicate:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        st = obj.get("status") or {}
        return (
            st.get("observedGeneration") == generation
            and st.get("specHash") == spec_hash
            and condition(obj, "Ready").get("status") == "True"
            and condition(obj, "Reconciled").get("status") == "True"
        )

    return check


def roles(compute: Compute) -> set[str]:
    # The superuser: over the socket in PGDATA, the only place pg_hba.conf trusts it.
    dsn = make_conninfo(
        host=str(compute.workdir / "pgdata"),
        port=compute.pg_port,
        user="cloud_admin",
        dbname="postgres",
    )
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'").fetchall()
    return {r[0] for r in rows}


async def apply_and_wait(api: Api, compute: Compute) -> dict[str, Any]:
    spec = spec_for(compute)
    await api.create(spec)
    obj: dict[str, Any] = await api.wait_for(settled(1, hash_of(spec)), what="Ready at gen 1")
    return obj


async def test_apply_reaches_running_and_ready(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    obj = await apply_and_wait(api, compute)
    st = obj["status"]
    assert st["status"] == "running"
    assert condition(obj, "Degraded")["status"] == "False"
    observed = await compute.status(api.session)
    assert observed["status"] == "running"
    assert observed["desired_spec_hash"] == observed["applied_spec_hash"] == st["specHash"]
    assert "app" in roles(compute)
    await api.wait_for_event("Configured")
    await api.wait_for_event("Ready")
    # One event per transition, although kmock replays the creation to kopf and the
    # first periodic reconcile may overlap it.
    await api.wait_for(lambda kind, obj: True, what="a settled resource")
    reasons = [e["reason"] for e in api.events()]
    assert reasons.count("Configured") == 1
    assert reasons.count("Ready") == 1
    # The operator watched only its own object, by a server-side field selector.
    requests = api.emulator.served
    watches = [r for r in requests if r.params.get("watch") == "true"]
    assert any(r.params.get("fieldSelector") == f"metadata.name={harness.NAME}" for r in watches)
    # ...and wrote its status through the status subresource.
    assert any(r.method == kmock.method.PATCH and r.subresource == "status" for r in requests)


async def test_startup_timings_reach_the_status(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    async with api.session.get(f"{compute.url}/metrics.json", headers=compute.auth()) as response:
        if response.status == 404:
            pytest.skip("this compute_ctl serves no /metrics.json yet")
        timings = await response.json()
    obj = await apply_and_wait(api, compute)
    assert timings["total_startup_ms"] == 0  # read before the start
    assert obj["status"]["timings"]["total_startup_ms"] > 0
    assert set(obj["status"]["timings"]) == set(timings)


async def test_spec_patch_reconfigures_and_advances_observed_generation(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    await apply_and_wait(api, compute)
    before = await compute.status(api.session)
    spec = spec_for(compute, roles=("app", "reporting"))
    generation = await api.replace_spec(spec)
    obj = await api.wait_for(settled(generation, hash_of(spec)), what="generation 2 reconciled")
    assert obj["status"]["observedGeneration"] == 2
    after = await compute.status(api.session)
    assert after["desired_generation"] == before["desired_generation"] + 1
    assert after["applied_spec_hash"] == hash_of(spec)
    assert {"app", "reporting"} <= roles(compute)


async def test_restart_only_settings_are_reported(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    await apply_and_wait(api, compute)
    spec = spec_for(compute, settings={"max_connections": "60"})
    generation = await api.replace_spec(spec)

    def restart_required(kind: str, obj: dict[str, Any]) -> bool:
        cond = condition(obj, "RestartRequired")
        return (obj.get("status") or {}).get("observedGeneration") == generation and cond.get(
            "status"
        ) == "True"

    obj = await api.wait_for(restart_required, what="RestartRequired")
    assert condition(obj, "RestartRequired")["reason"] == "PendingRestart"
    assert "max_connections" in condition(obj, "RestartRequired")["message"]
    assert "max_connections" in obj["status"]["pendingRestart"]
    await api.wait_for_event("RestartRequired")


async def test_invalid_spec_is_reported_and_the_compute_is_untouched(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    """Every invalid family: ``Reconciled=False/Invalid`` naming the object, a Warning
    Event, and no ``/configure`` reaches compute_ctl (its desired spec stays as it was)."""
    await apply_and_wait(api, compute)
    before = await compute.status(api.session)
    configures = compute.log.read_text(errors="replace").count("POST /configure")
    refused_by_schema = []
    for family in invalid_specs.FAMILIES:
        bad = invalid_specs.invalid(spec_for(compute, roles=("app", "never_created")), family)
        generation = await api.try_replace_spec(bad)
        if generation is None:  # the CRD schema already refuses it (an enum, a pattern)
            refused_by_schema.append(family.id)
            continue

        def refused(kind: str, obj: dict[str, Any], generation: int = generation) -> bool:
            st = obj.get("status") or {}
            return (
                st.get("observedGeneration") == generation
                and condition(obj, "Reconciled").get("reason") == "Invalid"
            )

        obj = await api.wait_for(refused, what=f"Reconciled=False Invalid ({family.id})")
        assert family.needle in condition(obj, "Reconciled")["message"], family.id
        assert family.needle in obj["status"]["lastError"], family.id
        assert condition(obj, "Ready")["status"] == "True"  # still serving the previous spec
        event = await api.wait_for_event("Invalid", contains=family.needle)
        assert event["type"] == "Warning"
    assert len(refused_by_schema) < len(invalid_specs.FAMILIES) // 2, refused_by_schema
    after = await compute.status(api.session)
    assert after["desired_generation"] == before["desired_generation"]
    assert after["desired_spec_hash"] == before["desired_spec_hash"]
    assert after["status"] == "running"
    assert "never_created" not in roles(compute)
    # No /configure reached compute_ctl (not even one it would have refused itself).
    assert compute.log.read_text(errors="replace").count("POST /configure") == configures


async def test_a_failing_apply_shows_degraded_while_running(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    await apply_and_wait(api, compute)
    # A database copied from a template that does not exist: admission cannot know, the
    # catalog apply fails in postgres.
    broken = spec_for(compute)
    broken["cluster"]["databases"].append(
        {
            "name": "orphan",
            "owner": "app",
            "options": [{"name": "TEMPLATE", "value": "no_such_template", "vartype": "string"}],
        }
    )
    generation = await api.replace_spec(broken)

    def degraded(kind: str, obj: dict[str, Any]) -> bool:
        st = obj.get("status") or {}
        return (
            st.get("observedGeneration") == generation
            and condition(obj, "Degraded").get("status") == "True"
        )

    obj = await api.wait_for(degraded, what="Degraded=True")
    # Beyond Neon: the compute keeps serving its last applied spec and retries this one.
    assert obj["status"]["status"] == "running"
    assert "orphan" in obj["status"]["lastError"]
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Reconciled")["status"] == "False"
    event = await api.wait_for_event("Degraded")
    assert event["type"] == "Warning"
    body = await compute.status(api.session)
    assert body["status"] == "running"
    assert "orphan" in body["pending_error"]


async def test_a_direct_configure_is_a_conflict_and_the_resource_wins(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    obj = await apply_and_wait(api, compute)
    ours = obj["status"]["specHash"]
    foreign = spec_for(compute, roles=("app", "intruder"))
    mark = api.mark()
    async with api.session.post(
        f"{compute.url}/configure", json={"spec": foreign}, headers=compute.auth()
    ) as response:
        assert response.status == 200, await response.text()

    conflicts: list[dict[str, Any]] = []

    def conflict_then_restored(kind: str, obj: dict[str, Any]) -> bool:
        if condition(obj, "Reconciled").get("reason") == "Conflict":
            conflicts.append(obj)
            return False
        return bool(conflicts) and settled(1, ours)(kind, obj)

    # The conflict is reported first; the next reconcile (the 1 s timer) pushes ours back.
    obj = await api.wait_for(conflict_then_restored, what="Conflict, then our spec", since=mark)
    assert conflicts[0]["status"]["conflictSpecHash"] == hash_of(foreign)
    assert "direct /configure" in condition(conflicts[0], "Reconciled")["message"]
    assert obj["status"].get("conflictSpecHash") is None
    assert (await compute.status(api.session))["desired_spec_hash"] == ours
    assert "intruder" in roles(compute)  # it was applied; the spec's roles are not dropped
    await api.wait_for_event("Conflict")
    await api.wait_for_event("ConflictResolved")


async def test_delete_terminates_the_compute_and_records_the_lsn(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    obj = await apply_and_wait(api, compute)
    assert "compute.pgctl.dev/terminate" in obj["metadata"]["finalizers"]
    await api.delete()
    await api.wait_gone()
    event = await api.wait_for_event("Terminated")
    assert event["type"] == "Normal"
    assert "terminated" in event["message"]
    # compute_ctl reports terminated, or has already exited after terminating.
    if compute.proc.poll() is None:
        try:
            observed = await compute.status(api.session)
        except Exception:  # it exited between the two checks
            observed = {"status": "terminated"}
        assert observed["status"] == "terminated"


async def test_a_restarted_operator_resumes_without_pushing_again(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    obj = await apply_and_wait(api, compute)
    # kopf records the change as handled after the status shows it: a stop before that
    # is resumed as a creation (which pushes nothing either, but logs otherwise).
    await api.wait_for(lambda kind, obj: harness.diffbase(obj) is not None, what="handled")
    before = await compute.status(api.session)
    await sidecar.stop()
    # A new operator process: kopf resumes the resource, whose spec is already applied.
    async with Operator.running(
        api_url=api.base,
        compute_url=compute.url,
        key_file=compute.keys.private,
        workdir=compute.workdir,
    ) as again:
        await again.wait_for_log("Resuming is processed: 1 succeeded")
        after = await compute.status(api.session)
    assert after["desired_generation"] == before["desired_generation"]
    current = api.current()
    assert current is not None
    assert current["status"]["specHash"] == obj["status"]["specHash"]
    assert condition(current, "Reconciled")["status"] == "True"
