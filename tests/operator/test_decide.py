"""``reconcile.decide``: when the operator pushes, waits, or reports a conflict (pure)."""

from __future__ import annotations

import datetime

import pytest

from compute_ctl.operator import reconcile, status

A, B, C = "a" * 16, "b" * 16, "c" * 16
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
CHANGE, RESYNC = reconcile.Trigger.CHANGE, reconcile.Trigger.RESYNC
PUSH, HOLD, NONE = reconcile.Action.PUSH, reconcile.Action.HOLD, reconcile.Action.NONE


def obs(desired: str, st: str = "running") -> status.Observation:
    return status.Observation(status=st, desired_spec_hash=desired, applied_spec_hash=desired)


def stored(
    *,
    compute: str | None = None,
    conflict: str | None = None,
    problem: status.Problem | None = None,
) -> status.ResourceStatus:
    base = status.render(
        old=status.ResourceStatus(),
        facts=status.Facts(generation=1, want=A, observation=obs(A), problem=problem),
        now=T0,
    )
    return base.model_copy(update={"compute_spec_hash": compute, "conflict_spec_hash": conflict})


def decide(
    o: status.Observation,
    want: str,
    old: status.ResourceStatus,
    trigger: reconcile.Trigger,
    pushed: frozenset[str] = frozenset(),
    refused: dict[str, str] | None = None,
) -> reconcile.Decision:
    return reconcile.decide(
        obs=o, want=want, old=old, pushed=pushed, trigger=trigger, refused=refused
    )


@pytest.mark.parametrize("trigger", [CHANGE, RESYNC])
def test_nothing_to_do_when_the_compute_already_wants_our_spec(trigger: reconcile.Trigger) -> None:
    assert decide(obs(A), A, stored(compute=A), trigger).action is NONE


@pytest.mark.parametrize("trigger", [CHANGE, RESYNC])
def test_an_empty_compute_gets_the_spec(trigger: reconcile.Trigger) -> None:
    assert decide(obs("", "empty"), A, status.ResourceStatus(), trigger).action is PUSH


def test_a_changed_resource_is_pushed_over_our_own_previous_spec() -> None:
    assert decide(obs(A), C, stored(compute=A), CHANGE, frozenset({A})).action is PUSH
    assert decide(obs(A), C, stored(compute=A), RESYNC).action is PUSH


def test_a_spec_known_only_from_the_stored_status_is_ours_after_a_restart() -> None:
    # A restarted operator has pushed nothing yet; the stored computeSpecHash vouches for A.
    assert decide(obs(A), C, stored(compute=A), RESYNC).action is PUSH
    assert decide(obs(B), C, stored(compute=A), RESYNC).action is HOLD


def test_a_foreign_spec_is_first_reported_then_replaced_on_resync() -> None:
    first = decide(obs(B), A, stored(compute=A), RESYNC, frozenset({A}))
    assert first.action is HOLD
    assert first.conflict_hash == B
    assert first.problem is not None
    assert first.problem.reason is status.Reason.CONFLICT
    # The next reconcile sees the reported conflict: the resource wins.
    after = stored(compute=B, conflict=B)
    second = decide(obs(B), A, after, RESYNC, frozenset({A}))
    assert (second.action, second.overwrite) == (PUSH, B)


def test_a_foreign_spec_is_replaced_at_once_when_the_resource_changes() -> None:
    decision = decide(obs(B), C, stored(compute=A), CHANGE, frozenset({A}))
    assert (decision.action, decision.overwrite) == (PUSH, B)


def test_a_failed_or_terminating_compute_is_left_alone() -> None:
    assert decide(obs(A, "failed"), C, stored(compute=A), CHANGE).action is NONE
    decision = decide(obs(A, "terminated"), C, stored(compute=A), CHANGE)
    assert decision.action is NONE
    assert decision.problem is not None
    assert decision.problem.reason is status.Reason.TERMINATING


def test_a_refused_spec_is_not_pushed_again_until_it_changes() -> None:
    old = stored(compute=A, problem=status.Problem(status.Reason.REJECTED, "HTTP 400: no"))
    old = old.model_copy(update={"spec_hash": C})
    again = decide(obs(A), C, old, RESYNC, frozenset({A}), refused={C: "HTTP 400: no"})
    assert again.action is NONE
    assert again.problem is not None
    assert again.problem.reason is status.Reason.REJECTED
    assert decide(obs(A), B, old, CHANGE, frozenset({A}), refused={C: "no"}).action is PUSH


def test_a_stored_rejection_alone_never_stops_a_push() -> None:
    """The status subresource is writable by others: a forged ``Rejected`` for the wanted
    spec (after an operator restart, nothing in memory) must not freeze reconciling."""
    forged = stored(compute=A, problem=status.Problem(status.Reason.REJECTED, "forged"))
    forged = forged.model_copy(update={"spec_hash": C})
    assert decide(obs(A), C, forged, RESYNC, frozenset()).action is PUSH
