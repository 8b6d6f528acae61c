"""Rendering the resource's status and its events from what compute_ctl reports (pure)."""

from __future__ import annotations

import ast
import datetime
import pathlib

from compute_ctl.compute import api_models
from compute_ctl.operator import events, status

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
H = "aaaaaaaaaaaaaaaa"
R = status.Reason


def running(**changes: object) -> status.Observation:
    base = {
        "status": "running",
        "desired_spec_hash": H,
        "applied_spec_hash": H,
        "desired_generation": 1,
        "applied_generation": 1,
    }
    base.update(changes)
    return status.Observation.model_validate(base)


def render(
    facts: status.Facts, old: status.ResourceStatus | None = None, now: datetime.datetime = T0
) -> status.ResourceStatus:
    return status.render(old=old or status.ResourceStatus(), facts=facts, now=now)


def cond(st: status.ResourceStatus, kind: status.ConditionType) -> status.Condition:
    found = st.condition(kind)
    assert found is not None
    return found


def test_running_compute_with_our_spec_is_ready_and_reconciled() -> None:
    st = render(status.Facts(generation=2, want=H, observation=running(), timings={"a_ms": 5}))
    assert st.status == "running"
    assert st.observed_generation == 2
    assert st.spec_hash == H
    assert cond(st, status.ConditionType.READY).status == "True"
    assert cond(st, status.ConditionType.RECONCILED).reason == "Reconciled"
    assert cond(st, status.ConditionType.DEGRADED).status == "False"
    assert cond(st, status.ConditionType.RESTART_REQUIRED).status == "False"
    assert st.timings == {"a_ms": 5}
    assert all(c.observed_generation == 2 for c in st.conditions)


def test_failed_compute_is_degraded_with_its_error() -> None:
    obs = running(status="failed", error="apply failed: role x")
    st = render(status.Facts(generation=1, want=H, observation=obs))
    degraded = cond(st, status.ConditionType.DEGRADED)
    assert (degraded.status, degraded.reason) == ("True", "ComputeFailed")
    assert "role x" in degraded.message
    assert cond(st, status.ConditionType.READY).status == "False"
    assert st.last_error == "apply failed: role x"


def test_running_compute_retrying_a_spec_is_degraded_not_failed() -> None:
    why = "create_and_alter_databases: create database newdb failed: template1 in use"
    obs = running(desired_spec_hash="b" * 16, desired_generation=2, pending_error=why)
    st = render(status.Facts(generation=1, want="b" * 16, observation=obs))
    assert cond(st, status.ConditionType.READY).status == "True"  # still serving
    reconciled = cond(st, status.ConditionType.RECONCILED)
    assert (reconciled.status, reconciled.reason, reconciled.message) == (
        "False",
        "ApplyRetrying",
        why,
    )
    degraded = cond(st, status.ConditionType.DEGRADED)
    assert (degraded.status, degraded.reason) == ("True", "ApplyRetrying")
    assert st.last_error == why


def test_pending_restart_names_the_settings() -> None:
    obs = running(pending_restart=("shared_buffers", "max_connections"))
    st = render(status.Facts(generation=1, want=H, observation=obs))
    restart = cond(st, status.ConditionType.RESTART_REQUIRED)
    assert (restart.status, restart.reason) == ("True", "PendingRestart")
    assert "shared_buffers, max_connections" in restart.message
    assert st.pending_restart == ["shared_buffers", "max_connections"]


def test_unreachable_compute_keeps_what_was_known() -> None:
    before = render(status.Facts(generation=1, want=H, observation=running()))
    problem = status.Problem(R.UNREACHABLE, "compute_ctl cannot be reached at x")
    st = render(status.Facts(generation=1, want=H, observation=None, problem=problem), before)
    assert st.status == "unknown"
    assert st.applied_spec_hash == H
    assert cond(st, status.ConditionType.READY).status == "Unknown"
    assert cond(st, status.ConditionType.RECONCILED).status == "Unknown"


def test_invalid_spec_is_reported_without_a_hash() -> None:
    problem = status.Problem(R.INVALID_SPEC, "spec.computeSpec: cluster: Field required")
    st = render(status.Facts(generation=4, want=None, observation=running(), problem=problem))
    reconciled = cond(st, status.ConditionType.RECONCILED)
    assert (reconciled.status, reconciled.reason) == ("False", "Invalid")
    assert st.spec_hash is None
    assert st.observed_generation == 4
    assert cond(st, status.ConditionType.READY).status == "True"  # the compute still serves


def test_transition_time_moves_only_when_the_status_does() -> None:
    first = render(status.Facts(generation=1, want=H, observation=running()))
    same = render(status.Facts(generation=2, want=H, observation=running()), first, now=T1)
    ready = cond(same, status.ConditionType.READY)
    assert ready.last_transition_time == status.rfc3339(T0)
    failed = running(status="failed", error="boom")
    moved = render(status.Facts(generation=2, want=H, observation=failed), first, now=T1)
    assert cond(moved, status.ConditionType.READY).last_transition_time == status.rfc3339(T1)


def test_patch_is_empty_when_nothing_changed_and_minimal_otherwise() -> None:
    first = render(status.Facts(generation=1, want=H, observation=running()))
    stored = first.wire()
    again = render(status.Facts(generation=1, want=H, observation=running()), first, now=T1)
    assert status.patch_for(stored, again) == {}
    newer = render(status.Facts(generation=2, want=H, observation=running()), first, now=T1)
    patch = status.patch_for(stored, newer)
    assert set(patch) == {"observedGeneration", "conditions"}


def test_patch_deletes_cleared_fields_and_leaves_foreign_ones() -> None:
    problem = status.Problem(R.CONFLICT, "conflict")
    conflicted = render(
        status.Facts(
            generation=1, want=H, observation=running(), problem=problem, conflict_hash="b" * 16
        )
    )
    stored = {**conflicted.wire(), "somethingElse": 1}
    resolved = render(status.Facts(generation=1, want=H, observation=running()), conflicted)
    patch = status.patch_for(stored, resolved)
    assert patch["conflictSpecHash"] is None
    assert patch["lastError"] is None
    assert "somethingElse" not in patch


def test_parse_tolerates_garbage() -> None:
    assert status.ResourceStatus.parse({"conditions": "nope"}) == status.ResourceStatus()
    assert status.ResourceStatus.parse({"observedGeneration": 3}).observed_generation == 3


def test_observation_parses_compute_status_json() -> None:
    obs = status.Observation.model_validate(
        {
            "status": "running",
            "desired_spec_hash": H,
            "applied_spec_hash": H,
            "desired_generation": 2,
            "applied_generation": 2,
            "pending_restart": ["wal_level"],
            "last_active": "2026-01-01T00:00:00Z",
            "tenant": None,
            "something_new": 1,
        }
    )
    assert obs.serving
    assert obs.pending_restart == ["wal_level"]


def test_the_operator_spells_no_compute_status_itself() -> None:
    """Status names come from the wire contract's enum, never a string literal."""
    names = {s.value for s in api_models.ComputeStatus}
    root = pathlib.Path(status.__file__).parent
    found = [
        (path.name, node.value)
        for path in sorted(root.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert found == []


# --- events ---------------------------------------------------------------------------


def reasons(evs: list[events.Event]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in evs]


def test_events_mark_transitions_not_states() -> None:
    empty = status.ResourceStatus()
    starting = render(status.Facts(generation=1, want=H, observation=running(status="init")))
    up = render(status.Facts(generation=1, want=H, observation=running()), starting)
    assert reasons(events.transitions(empty, starting)) == []
    assert reasons(events.transitions(starting, up)) == [("Normal", "Ready")]
    assert events.transitions(up, up) == []

    failed = render(
        status.Facts(generation=1, want=H, observation=running(status="failed", error="x")), up
    )
    assert reasons(events.transitions(up, failed)) == [
        ("Warning", "NotReady"),
        ("Warning", "Degraded"),
    ]
    assert events.transitions(failed, failed) == []


def test_restart_required_is_announced_once_per_set_of_settings() -> None:
    up = render(status.Facts(generation=1, want=H, observation=running()))
    one = render(
        status.Facts(generation=1, want=H, observation=running(pending_restart=("a",))), up
    )
    two = render(
        status.Facts(generation=1, want=H, observation=running(pending_restart=("a", "b"))), one
    )
    assert reasons(events.transitions(up, one)) == [("Warning", "RestartRequired")]
    assert events.transitions(one, one) == []
    assert reasons(events.transitions(one, two)) == [("Warning", "RestartRequired")]


def test_refusals_are_warned_about_once_per_message() -> None:
    up = render(status.Facts(generation=1, want=H, observation=running()))

    def invalid(msg: str, old: status.ResourceStatus) -> status.ResourceStatus:
        problem = status.Problem(R.INVALID_SPEC, msg)
        return render(
            status.Facts(generation=2, want=None, observation=running(), problem=problem), old
        )

    bad = invalid("cluster: Field required", up)
    assert reasons(events.transitions(up, bad)) == [("Warning", "Invalid")]
    assert events.transitions(bad, invalid("cluster: Field required", bad)) == []
    worse = invalid("format_version: not a number", bad)
    assert reasons(events.transitions(bad, worse)) == [("Warning", "Invalid")]
