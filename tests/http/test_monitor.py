"""The activity monitor against a real PostgreSQL: Neon's checks, order, exclusions, downtime."""

from __future__ import annotations

import asyncio
import datetime
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import monitor
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from tests import pgserver
from tests.support import nodedouble

pytestmark = pytest.mark.postgres

S = state_mod.ComputeStatus
APP_ROLE = "monitor_app"
INTERVAL = 0.05
UTC = datetime.UTC


@pytest.fixture(scope="module")
def quiet_pg() -> Iterator[pgserver.PgServer]:
    """No autovacuum, so nothing but the test's own sessions is activity."""
    server = pgserver.PgServer.create(extra_conf="autovacuum = off")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        conn.execute(sql.SQL("CREATE DATABASE appdb OWNER {}").format(sql.Identifier(APP_ROLE)))
    try:
        yield server
    finally:
        server.stop()


async def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def _running(state: state_mod.ComputeState, **spec: object) -> None:
    async with state.lock():
        state.set_desired(spec_mod.ComputeSpec.model_validate(nodedouble.minimal_spec(**spec)))
        state.set_status(S.INIT)
        state.set_status(S.RUNNING)


@pytest.fixture
async def watched(quiet_pg: pgserver.PgServer) -> AsyncIterator[monitor.ActivityMonitor]:
    state = state_mod.ComputeState()
    mon = monitor.ActivityMonitor(
        state=state,
        connstr=quiet_pg.dsn(),
        metrics=metrics_mod.Metrics(build_tag="t", state=state),
        interval=INTERVAL,
    )
    task = asyncio.create_task(mon.run())
    try:
        yield mon
    finally:
        async with state.lock():
            state.set_status(S.TERMINATION_PENDING_FAST)
        await asyncio.wait_for(task, 5)


async def _app_session(pg: pgserver.PgServer) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(pg.dsn("appdb", user=APP_ROLE), autocommit=True)


async def test_waits_for_running_and_never_sets_last_active_at_start(
    watched: monitor.ActivityMonitor,
) -> None:
    await asyncio.sleep(0)  # let it start waiting
    assert watched.checks == 0  # not polling before running
    await _running(watched.state)
    await eventually(lambda: watched.checks >= 3)
    assert watched.state.last_active is None


async def test_idle_client_sets_its_last_state_change(
    watched: monitor.ActivityMonitor, quiet_pg: pgserver.PgServer
) -> None:
    async with await _app_session(quiet_pg) as app:
        await app.execute("SELECT 1")
        # Running only now, so the monitor's first look finds the session already idle.
        await _running(watched.state)
        async with await psycopg.AsyncConnection.connect(quiet_pg.dsn()) as admin:
            cur = await admin.execute(
                "SELECT state_change FROM pg_stat_activity WHERE pid = %s", (app.info.backend_pid,)
            )
            row = await cur.fetchone()
        assert row is not None
        await watched.state.wait_for(lambda s: s.last_active is not None, timeout=10)
        assert watched.state.last_active == row[0]


async def test_a_transaction_left_open_is_activity_now(
    watched: monitor.ActivityMonitor, quiet_pg: pgserver.PgServer
) -> None:
    await _running(watched.state)
    async with await _app_session(quiet_pg) as app:
        await app.execute("BEGIN")
        await app.execute("SELECT 1")  # idle in transaction from here on
        started = datetime.datetime.now(UTC)
        await watched.state.wait_for(
            lambda s: s.last_active is not None and s.last_active > started, timeout=10
        )
        first = watched.state.last_active
        assert first is not None
        await watched.state.wait_for(
            lambda s: s.last_active is not None and s.last_active > first, timeout=10
        )
        await app.execute("ROLLBACK")


async def test_superuser_sessions_and_the_monitor_are_not_activity(
    watched: monitor.ActivityMonitor, quiet_pg: pgserver.PgServer
) -> None:
    await _running(watched.state)
    async with await psycopg.AsyncConnection.connect(quiet_pg.dsn("appdb")) as admin:
        await admin.execute("SELECT 1")  # idle in transaction, as the superuser
        checks = watched.checks
        await eventually(lambda: watched.checks >= checks + 5)
    assert watched.state.last_active is None


async def test_experimental_feature_counts_new_sessions(
    watched: monitor.ActivityMonitor, quiet_pg: pgserver.PgServer
) -> None:
    await _running(watched.state, features=["activity_monitor_experimental"])
    await eventually(lambda: watched.checks >= 2)  # baseline taken
    # A session that comes and goes between two polls is only seen by the statistics.
    started = datetime.datetime.now(UTC)
    async with await _app_session(quiet_pg) as app:
        await app.execute("SELECT 1")
    await watched.state.wait_for(
        lambda s: s.last_active is not None and s.last_active >= started, timeout=10
    )


async def test_stops_promptly_on_termination(quiet_pg: pgserver.PgServer) -> None:
    state = state_mod.ComputeState()
    mon = monitor.ActivityMonitor(state=state, connstr=quiet_pg.dsn(), interval=60)
    await _running(state)
    task = asyncio.create_task(mon.run())
    await eventually(lambda: mon.checks >= 1)
    async with state.lock():
        state.set_status(S.FAILED, error="boom")
    await asyncio.wait_for(task, 5)  # woken from its 60 s pause, not waiting it out


async def test_never_started_when_terminated_before_running(quiet_pg: pgserver.PgServer) -> None:
    state = state_mod.ComputeState()
    mon = monitor.ActivityMonitor(state=state, connstr=quiet_pg.dsn())
    task = asyncio.create_task(mon.run())
    async with state.lock():
        state.set_status(S.TERMINATION_PENDING_IMMEDIATE)
    await asyncio.wait_for(task, 5)
    assert mon.checks == 0


def _stop(server: pgserver.PgServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(timeout=30)


async def test_downtime_metrics_rise_while_postgres_is_down_and_reset_after(
    pg: pgserver.PgServer,
) -> None:
    state = state_mod.ComputeState()
    metrics = metrics_mod.Metrics(build_tag="t", state=state)
    mon = monitor.ActivityMonitor(state=state, connstr=pg.dsn(), metrics=metrics, interval=INTERVAL)

    def sample(name: str) -> float:
        return metrics.registry.get_sample_value(name) or 0.0

    await _running(state)
    task = asyncio.create_task(mon.run())
    try:
        await eventually(lambda: mon.checks >= 1)
        await asyncio.to_thread(_stop, pg)
        await eventually(lambda: sample("compute_pg_current_downtime_ms") > 100)
        assert sample("compute_pg_downtime_ms_total") > 0
        await asyncio.to_thread(pg.start)
        checks = mon.checks
        await eventually(lambda: mon.checks > checks)  # reconnected
        assert sample("compute_pg_current_downtime_ms") == 0
        assert sample("compute_pg_downtime_ms_total") > 100
    finally:
        async with state.lock():
            state.set_status(S.TERMINATION_PENDING_FAST)
        await asyncio.wait_for(task, 5)


def _observation(**fields: object) -> monitor.Observation:
    values: dict[str, object] = {
        "active_time": 0.0,
        "sessions": 0,
        "busy_backends": 0,
        "idle_since": None,
        "walsenders": 0,
        "subscriptions": 0,
        "autovacuum_workers": 0,
    }
    values.update(fields)
    return monitor.Observation(**values)  # type: ignore[arg-type]


NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields",
    [
        {"busy_backends": 1},
        {"walsenders": 1},
        {"subscriptions": 2},
        {"autovacuum_workers": 1},
    ],
)
def test_each_check_means_now(fields: dict[str, object]) -> None:
    mon = monitor.ActivityMonitor(
        state=state_mod.ComputeState(), connstr="dbname=postgres", clock=lambda: NOW
    )
    assert mon.evaluate(_observation(**fields)) == NOW


def test_idle_backends_are_checked_before_walsenders_and_only_move_forward() -> None:
    mon = monitor.ActivityMonitor(
        state=state_mod.ComputeState(), connstr="dbname=postgres", clock=lambda: NOW
    )
    earlier = NOW - datetime.timedelta(minutes=5)
    assert mon.evaluate(_observation(idle_since=earlier, walsenders=1)) == earlier
    # The same idle time again is not new: the walsender check fires.
    assert mon.evaluate(_observation(idle_since=earlier, walsenders=1)) == NOW
    # An older idle time never moves it back.
    older = earlier - datetime.timedelta(minutes=5)
    assert mon.evaluate(_observation(idle_since=older)) is None
    assert mon.evaluate(_observation()) is None


def test_statistics_need_a_baseline_and_the_feature() -> None:
    state = state_mod.ComputeState()
    state.desired = spec_mod.ComputeSpec.model_validate(
        nodedouble.minimal_spec(features=["activity_monitor_experimental"])
    )
    mon = monitor.ActivityMonitor(state=state, connstr="dbname=postgres", clock=lambda: NOW)
    assert mon.evaluate(_observation(active_time=5.0, sessions=3)) is None  # baseline
    assert mon.evaluate(_observation(active_time=5.0, sessions=3)) is None
    assert mon.evaluate(_observation(active_time=5.0, sessions=4)) == NOW
    state.desired = None  # feature off: statistics are ignored
    assert mon.evaluate(_observation(active_time=9.0, sessions=9)) is None
