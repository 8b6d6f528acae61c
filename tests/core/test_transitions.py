"""Every legal and illegal status transition, enforced by ``ComputeState.set_status``."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from compute_ctl.compute import state

S = state.ComputeStatus
PAIRS = list(itertools.product(S, S))

# Neon's machine (reference section 3) plus termination from every live state.
NEON_EDGES = {
    (S.EMPTY, S.CONFIGURATION_PENDING),
    (S.EMPTY, S.INIT),
    (S.CONFIGURATION_PENDING, S.INIT),
    (S.INIT, S.RUNNING),
    (S.INIT, S.FAILED),
    (S.RUNNING, S.CONFIGURATION_PENDING),
    (S.CONFIGURATION_PENDING, S.CONFIGURATION),
    (S.CONFIGURATION, S.RUNNING),
    (S.CONFIGURATION, S.FAILED),
    (S.EMPTY, S.TERMINATION_PENDING_FAST),
    (S.RUNNING, S.TERMINATION_PENDING_FAST),
    (S.RUNNING, S.TERMINATION_PENDING_IMMEDIATE),
    (S.TERMINATION_PENDING_FAST, S.TERMINATED),
    (S.TERMINATION_PENDING_IMMEDIATE, S.TERMINATED),
}
NEVER = {
    (S.EMPTY, S.RUNNING),
    (S.RUNNING, S.INIT),
    (S.FAILED, S.RUNNING),
    (S.TERMINATION_PENDING_IMMEDIATE, S.TERMINATION_PENDING_FAST),
} | {(S.TERMINATED, new) for new in S if new is not S.TERMINATED}


def test_table_has_neons_edges_and_none_of_the_forbidden() -> None:
    legal = {(old, new) for old, news in state.TRANSITIONS.items() for new in news}
    assert legal >= NEON_EDGES
    assert not legal & NEVER
    assert set(state.TRANSITIONS) == set(S)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o.value}->{n.value}" for o, n in PAIRS])
async def test_transition(old: state.ComputeStatus, new: state.ComputeStatus) -> None:
    st = state.ComputeState()
    st.status = old  # place the machine at `old` directly
    legal = new is old or new in state.TRANSITIONS[old]
    async with st.lock() as s:
        if legal:
            s.set_status(new)
        else:
            with pytest.raises(state.IllegalTransition) as caught:
                s.set_status(new)
            assert old.value in str(caught.value)
            assert new.value in str(caught.value)
    assert st.status is (new if legal else old)
    assert st.transitions == ([(old, new)] if legal and new is not old else [])


async def test_set_status_needs_the_lock() -> None:
    with pytest.raises(RuntimeError, match="lock"):
        state.ComputeState().set_status(S.INIT)


async def test_transitions_are_logged_and_wake_waiters(caplog: pytest.LogCaptureFixture) -> None:

    st = state.ComputeState()
    waiter = asyncio.create_task(st.wait_for(lambda s: s.status is S.INIT))
    await asyncio.sleep(0)  # let the waiter block on the condition
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.state")
    async with st.lock() as s:
        s.set_status(S.INIT)
    await asyncio.wait_for(waiter, 1.0)
    assert "compute status: empty -> init" in caplog.text


async def test_error_is_kept_on_failed_and_cleared_on_running() -> None:
    st = state.ComputeState()
    async with st.lock() as s:
        s.set_status(S.INIT)
        s.set_status(S.FAILED, error="boom")
    assert st.error == "boom"
    st2 = state.ComputeState()
    st2.error = "old"
    async with st2.lock() as s:
        s.set_status(S.INIT)
    assert st2.error is None
