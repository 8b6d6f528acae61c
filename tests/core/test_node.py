"""ComputeNode in-process against real PostgreSQL: the start paths, /configure semantics,
failures, drift and termination."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from compute_ctl.compute import admission, errors, failpoints, node, state
from compute_ctl.compute import applier as applier_mod
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import applier, helpers

pytestmark = pytest.mark.postgres
S = state.ComputeStatus


def _node(
    pgdata: Path,
    port: int,
    *,
    spec: spec_mod.ComputeSpec | None,
    catalog: applier_mod.CatalogApplier | None = None,
    fps: failpoints.Failpoints | None = None,
    **params: object,
) -> node.ComputeNode:
    return node.ComputeNode(
        helpers.make_params(pgdata=pgdata, port=port, **params),
        config=spec_mod.ComputeConfig(spec=spec),
        catalog=catalog,  # None: the real catalog package
        failpoints=fps,
    )


async def test_empty_then_configure_then_reconfigure(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = pgserver.free_port()
    pgdata = scratch / "pgdata"
    n = _node(pgdata, port, spec=None)
    created = n.state.start_time
    caplog.set_level(logging.INFO, logger="compute_ctl.compute")
    async with helpers.run_node(n, until=S.EMPTY) as run:
        assert not pgdata.exists()  # PGDATA is not touched while waiting for a spec...
        # ...but, as a pooled compute, it prepares a spare one beside it.
        await helpers.wait_until(lambda: "prewarmed a PGDATA" in caplog.text, timeout=30)
        await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        assert "from the prewarmed initdb" in caplog.text
        assert not (scratch / "pgdata.warmup").exists()
        assert n.state.status is S.RUNNING
        assert n.state.applied_generation == n.state.desired_generation == 1
        assert n.state.applied_hash == n.state.desired_hash != ""
        assert n.state.start_time > created  # reset when the spec arrived
        timings = n.state.timings
        assert timings.wait_for_spec_ms > 0
        assert 0 < timings.start_postgres_ms < timings.total_startup_ms
        assert timings.config_ms > 0
        assert (pgdata / "postmaster.pid").exists()
        assert oct(pgdata.stat().st_mode & 0o777) == "0o700"
        async with await psycopg.AsyncConnection.connect(helpers.role_dsn(port)) as conn:
            cur = await conn.execute("select current_user, current_database()")
            assert await cur.fetchone() == ("app_owner", "appdb")

        # A reloadable setting and a new role: visible to the next connection on return.
        second = helpers.make_spec(
            port=port, roles=["app_owner", "late"], settings=[("work_mem", "7MB", "string")]
        )
        await n.configure(spec_mod.ComputeConfig(spec=second))
        assert await helpers.show(n, "work_mem") == "7MB"
        async with await psycopg.AsyncConnection.connect(
            helpers.role_dsn(port, role="late", dbname="postgres")
        ):
            pass
        assert n.state.pending_restart == []

        # A restart-only setting is written, reloaded and reported as pending.
        third = helpers.make_spec(
            port=port,
            roles=["app_owner", "late"],
            settings=[("max_locks_per_transaction", "99", "integer")],
        )
        await n.configure(spec_mod.ComputeConfig(spec=third))
        assert n.state.pending_restart == ["max_locks_per_transaction"]
        assert n.state.applied_generation == 3

        # Rejected: a port that disagrees with -C (400) leaves the state alone.
        with pytest.raises(errors.ConfigError, match="port"):
            await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port + 1)))
        with pytest.raises(errors.ConfigError, match="spec"):
            await n.configure(spec_mod.ComputeConfig(spec=None))
        assert (n.state.status, n.state.desired_generation) == (S.RUNNING, 3)

        pid = n.postmaster.pid if n.postmaster else 0
        assert await n.terminate("fast") == (False, None)
        assert await n.terminate("fast") == (True, None)  # 201 in HTTP terms
        assert await asyncio.wait_for(run, 10) == 0
    assert not helpers.alive(pid)
    assert helpers.processes_in(pgdata) == []


async def test_terminate_while_empty_discards_the_prewarm(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = _node(scratch / "pgdata", pgserver.free_port(), spec=None)
    caplog.set_level(logging.INFO, logger="compute_ctl.compute")
    async with helpers.run_node(n, until=S.EMPTY) as run:
        await helpers.wait_until(lambda: (scratch / "pgdata.warmup").exists(), timeout=10)
        assert await n.terminate("fast") == (False, None)
        assert await asyncio.wait_for(run, 10) == 0
    assert n.state.status is S.TERMINATED
    assert not (scratch / "pgdata.warmup").exists()
    assert not (scratch / "pgdata").exists()


async def test_configure_and_terminate_refused_while_starting(scratch: Path) -> None:
    port = pgserver.free_port()
    fps = failpoints.Failpoints(enabled=True)
    fps.set("before-start-postgres", "pause")
    n = _node(scratch / "pgdata", port, spec=helpers.make_spec(port=port), fps=fps)
    async with helpers.run_node(n, until=S.INIT):
        await helpers.wait_until(lambda: "before-start-postgres" in fps.waiting)
        with pytest.raises(errors.StatusError, match="invalid compute status: init"):
            await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        with pytest.raises(errors.StatusError, match="invalid compute status: init"):
            await n.terminate("fast")
        fps.set("before-start-postgres", "off")
        await n.state.wait_for(lambda s: s.status is S.RUNNING, timeout=30)
        assert n.state.desired_generation == 1


async def test_signal_during_start_stops_cleanly(scratch: Path) -> None:
    port = pgserver.free_port()
    fps = failpoints.Failpoints(enabled=True)
    fps.set("before-apply", "pause")
    pgdata = scratch / "pgdata"
    n = _node(pgdata, port, spec=helpers.make_spec(port=port), fps=fps)
    async with helpers.run_node(n, until=None) as run:
        await helpers.wait_until(lambda: "before-apply" in fps.waiting, timeout=30)
        assert n.postmaster is not None
        pid = n.postmaster.pid
        n.request_stop("fast")
        assert await asyncio.wait_for(run, 10) == 0
        assert n.state.status is S.TERMINATED
    assert not helpers.alive(pid)
    assert helpers.processes_in(pgdata) == []


class _FailSecond(applier.SqlApplier):
    async def apply_spec(
        self,
        *,
        connstr: str,
        admitted: admission.Admitted,
        concurrency: int,
        deadline: float | None = None,
    ) -> object:
        if self.applied:
            raise errors.ApplyError('role "x": boom', phase="create_roles", obj="x")
        return await super().apply_spec(connstr=connstr, admitted=admitted, concurrency=concurrency)

    async def plan_spec(self, *, connstr: str, admitted: admission.Admitted) -> applier.SqlPlan:
        # Work to do after the first apply, so that the configurator calls apply_spec.
        plan = await super().plan_spec(connstr=connstr, admitted=admitted)
        return plan if not self.applied else applier.SqlPlan([sql.SQL("SELECT {}").format(1)])


async def test_failed_reconfigure_stays_running_then_terminate(scratch: Path) -> None:
    port = pgserver.free_port()
    n = _node(scratch / "pgdata", port, spec=helpers.make_spec(port=port), catalog=_FailSecond())
    async with helpers.run_node(n) as run:
        with pytest.raises(errors.ComputeError, match="compute configuration failed: role"):
            await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        # Beyond Neon: a failed apply on a healthy postgres is retried, not terminal.
        assert n.state.status is S.RUNNING
        assert n.state.applied_generation == 1
        assert n.state.pending_error is not None
        assert "boom" in n.state.pending_error
        with pytest.raises(errors.ComputeError, match="compute configuration failed: role"):
            await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        assert n.state.desired_generation == 3
        await helpers.wait_until(lambda: n.state.status is S.RUNNING)
        assert await n.terminate("immediate") == (False, None)
        assert await asyncio.wait_for(run, 10) == 0


async def test_postgres_that_cannot_start_fails_fast(scratch: Path) -> None:
    port = pgserver.free_port()
    bad = helpers.make_spec(port=port, settings=[("shared_buffers", "lots", "string")])
    n = _node(scratch / "pgdata", port, spec=bad)
    started = time.monotonic()
    async with helpers.run_node(n, until=None) as run:
        assert await asyncio.wait_for(run, 30) == 1
    assert time.monotonic() - started < 15  # not the 60 s readiness deadline
    assert n.state.status is S.FAILED
    assert n.state.error is not None
    assert "shared_buffers" in n.state.error  # PG's own complaint, from its stderr


async def test_postmaster_death_ends_run_with_failure(scratch: Path) -> None:
    port = pgserver.free_port()
    pgdata = scratch / "pgdata"
    n = _node(pgdata, port, spec=helpers.make_spec(port=port))
    async with helpers.run_node(n) as run:
        assert n.postmaster is not None
        os.kill(n.postmaster.pid, signal.SIGKILL)
        assert await asyncio.wait_for(run, 10) == 1
        assert n.state.status is S.FAILED
        assert n.state.error == "postgres exited with code -9"
    await helpers.wait_until(lambda: helpers.processes_in(pgdata) == [], what="backends to exit")


async def test_settings_only_change_restores_catalog_drift(scratch: Path) -> None:
    """A one-setting /configure skips the catalog's executor when the plan is empty, but
    still observes and plans: drift made behind our back is restored by it, at once (no
    resync timer here), along with the new setting."""
    port = pgserver.free_port()
    n = _node(scratch / "pgdata", port, spec=helpers.make_spec(port=port), resync_interval=3600)
    async with helpers.run_node(n):
        await helpers.migrations_done(n)

        def applies() -> float:
            return (
                n.metrics.registry.get_sample_value(
                    "compute_ctl_reconfigure_phase_seconds_count", {"phase": "catalog apply"}
                )
                or 0.0
            )

        async with await psycopg.AsyncConnection.connect(n.connstr(), autocommit=True) as conn:
            await conn.execute("ALTER ROLE app_owner NOLOGIN")
        before = applies()
        settings = [("work_mem", "7MB", "string")]
        await n.configure(
            spec_mod.ComputeConfig(spec=helpers.make_spec(port=port, settings=settings))
        )
        assert await helpers.show(n, "work_mem") == "7MB"
        async with await psycopg.AsyncConnection.connect(n.connstr()) as conn:
            cur = await conn.execute("select rolcanlogin from pg_roles where rolname = 'app_owner'")
            assert await cur.fetchone() == (True,)
        assert applies() == before + 1
        # And with nothing drifted, the same kind of change runs no catalog statement.
        settings = [("work_mem", "8MB", "string")]
        await n.configure(
            spec_mod.ComputeConfig(spec=helpers.make_spec(port=port, settings=settings))
        )
        assert await helpers.show(n, "work_mem") == "8MB"
        assert applies() == before + 1
        assert n.state.status is S.RUNNING


async def test_kept_session_replaced_after_killed_backend_and_crash_restart(
    scratch: Path,
) -> None:
    """Reconfigurations read through one kept maintenance session; when its backend is
    terminated between two /configure calls, or postgres restarts every backend after a
    crash, the next /configure reconnects transparently and succeeds at once."""
    port = pgserver.free_port()
    n = _node(scratch / "pgdata", port, spec=helpers.make_spec(port=port), resync_interval=3600)
    async with helpers.run_node(n):
        await helpers.migrations_done(n)

        async def configure(work_mem: str) -> int:
            settings = [("work_mem", work_mem, "string")]
            await n.configure(
                spec_mod.ComputeConfig(spec=helpers.make_spec(port=port, settings=settings))
            )
            assert await helpers.show(n, "work_mem") == work_mem
            assert n.state.status is S.RUNNING
            assert n.state.pending_error is None
            pid = n._maintenance.backend_pid
            assert pid is not None
            return pid

        first = await configure("5MB")
        assert await configure("6MB") == first  # kept: no new backend
        async with await psycopg.AsyncConnection.connect(n.connstr(), autocommit=True) as conn:
            await conn.execute("select pg_terminate_backend(%s)", [first])
            await helpers.wait_until_async(
                lambda: _backend_gone(conn, first), timeout=30, what="the backend to exit"
            )
        second = await configure("7MB")
        assert second != first

        assert n.postmaster is not None
        postmaster = n.postmaster.pid
        watch = await psycopg.AsyncConnection.connect(n.connstr(), autocommit=True)
        os.kill(second, signal.SIGKILL)  # postgres restarts every backend
        await helpers.wait_until_async(
            lambda: _broken(watch), timeout=30, what="postgres to end every backend"
        )
        await watch.close()
        await helpers.wait_until_async(
            lambda: _accepts(n.connstr()), timeout=30, what="postgres to accept connections"
        )
        third = await configure("8MB")
        assert third != second
        assert n.postmaster.pid == postmaster  # the postmaster itself never restarted
    assert n._maintenance.backend_pid is None  # closed with the compute


async def _backend_gone(conn: psycopg.AsyncConnection[tuple[object, ...]], pid: int) -> bool:
    cur = await conn.execute("select 1 from pg_stat_activity where pid = %s", [pid])
    return await cur.fetchone() is None


async def _broken(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
    try:
        await conn.execute("select 1")
    except psycopg.OperationalError:
        return True
    return False


async def _accepts(dsn: str) -> bool:
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


async def test_resync_restores_drift(scratch: Path) -> None:
    port = pgserver.free_port()
    n = _node(scratch / "pgdata", port, spec=helpers.make_spec(port=port), resync_interval=0.1)
    async with helpers.run_node(n):
        admin = n.connstr()
        # The start's background migrations alter roles too: let them finish first, or
        # DROP ROLE may meet "tuple concurrently updated".
        await helpers.migrations_done(n)
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute("DROP DATABASE appdb")
            await conn.execute("DROP ROLE app_owner")

        async def restored() -> bool:
            async with await psycopg.AsyncConnection.connect(admin) as conn:
                cur = await conn.execute(
                    "select count(*) from pg_roles where rolname = 'app_owner'"
                )
                row = await cur.fetchone()
                return row == (1,)

        deadline = time.monotonic() + 10
        while not await restored():
            assert time.monotonic() < deadline, "drift was not corrected"
            await asyncio.sleep(0.05)
        assert n.state.status is S.RUNNING
