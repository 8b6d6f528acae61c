"""compute_ctl as a real process against real PostgreSQL: cold start, start from empty,
supervision (postgres killed, compute_ctl killed), signals, and --keep-pgdata."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests import pgserver
from tests.core import helpers
from tests.support import compute_process as process
from tests.support.compute_process import ComputeProcess

pytestmark = pytest.mark.postgres

HOSTILE = "it's a \\ 'quoted' value"


def test_cold_start_serves_the_spec_and_stops_on_sigterm(
    scratch: Path, procs: list[ComputeProcess]
) -> None:
    port = pgserver.free_port()
    spec = helpers.spec_json(port=port, settings=[("cluster_name", HOSTILE, "string")])
    proc = ComputeProcess(
        pgdata=scratch / "pgdata", port=port, config=process.write_config(scratch / "c.json", spec)
    )
    procs.append(proc)
    status = proc.wait_status("running")
    assert status["applied_generation"] == status["desired_generation"] == 1
    assert status["error"] is None
    with psycopg.connect(helpers.role_dsn(port)) as conn:  # md5/SCRAM via Neon's hba line
        row = conn.execute("select current_user, current_setting('cluster_name')").fetchone()
    assert row == ("app_owner", HOSTILE)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(helpers.role_dsn(port), password="wrong")).close()
    postmaster = proc.postmaster_pid()

    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    assert "received fast shutdown request" in proc.log()
    assert not helpers.alive(postmaster)
    proc.wait_no_postgres()


def test_start_from_empty_then_configure_and_terminate(
    scratch: Path, procs: list[ComputeProcess]
) -> None:
    port = pgserver.free_port()
    pgdata = scratch / "pgdata"
    proc = ComputeProcess(
        pgdata=pgdata, port=port, config=process.write_config(scratch / "c.json", None)
    )
    procs.append(proc)
    assert proc.wait_status("empty")["desired_generation"] == 0
    assert not pgdata.exists()
    code, body = proc.request("POST", "/configure", {"spec": {"cluster": {}}})
    assert code == 400
    assert "spec" in body["error"]
    assert proc.status()["status"] == "empty"

    code, body = proc.request("POST", "/configure", {"spec": helpers.spec_json(port=port)})
    assert (code, body["status"]) == (200, "running")
    with psycopg.connect(helpers.role_dsn(port)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert proc.request("POST", "/terminate?mode=fast") == (200, {"lsn": None})
    assert proc.wait_exit() == 0
    proc.wait_no_postgres()


@pytest.fixture
def running(scratch: Path, procs: list[ComputeProcess]) -> ComputeProcess:
    """compute_ctl started with a spec, running."""
    port = pgserver.free_port()
    config = process.write_config(scratch / "c.json", helpers.spec_json(port=port))
    proc = ComputeProcess(pgdata=scratch / "pgdata", port=port, config=config)
    procs.append(proc)
    proc.wait_status("running")
    return proc


def test_postgres_killed_makes_compute_ctl_exit_nonzero(running: ComputeProcess) -> None:
    proc = running
    os.kill(proc.postmaster_pid(), signal.SIGKILL)
    assert proc.wait_exit() != 0
    assert "postgres exited with code -9" in proc.log()
    proc.wait_no_postgres()


def test_compute_ctl_killed_leaves_no_postmaster(running: ComputeProcess) -> None:
    proc = running
    postmaster = proc.postmaster_pid()
    proc.signal(signal.SIGKILL)
    proc.wait_exit()
    helpers.wait_until_sync(lambda: not helpers.alive(postmaster), what="the postmaster to die")
    proc.wait_no_postgres()


def test_keep_pgdata_keeps_data_across_restarts(scratch: Path, procs: list[ComputeProcess]) -> None:
    port = pgserver.free_port()
    pgdata = scratch / "pgdata"
    config = process.write_config(scratch / "c.json", helpers.spec_json(port=port))

    def start(*args: str) -> ComputeProcess:
        proc = ComputeProcess(pgdata=pgdata, port=port, config=config, args=args)
        procs.append(proc)
        proc.wait_status("running")
        return proc

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(helpers.role_dsn(port)) as conn:
            return conn.execute("select v from kept order by v").fetchall()

    first = start("--keep-pgdata")
    with psycopg.connect(helpers.role_dsn(port)) as conn:
        conn.execute("create table kept (v int)")
        conn.execute("insert into kept values (1)")
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = start("--keep-pgdata")
    assert rows() == [(1,)]
    with psycopg.connect(helpers.role_dsn(port)) as conn:
        conn.execute("insert into kept values (2)")
    # A SIGKILLed postmaster leaves a stale postmaster.pid behind (a SIGKILLed compute_ctl
    # would not: its postmaster gets SIGQUIT and removes it on the way out).
    os.kill(second.postmaster_pid(), signal.SIGKILL)
    second.signal(signal.SIGKILL)
    second.wait_exit()
    second.wait_no_postgres()
    assert (pgdata / "postmaster.pid").exists()

    third = start("--keep-pgdata")
    assert rows() == [(1,), (2,)]  # crash recovery kept the committed row
    third.signal(signal.SIGTERM)
    assert third.wait_exit() == 0

    fresh = start()  # Neon's default: a fresh PGDATA every start
    with (
        psycopg.connect(helpers.role_dsn(port)) as conn,
        pytest.raises(psycopg.errors.UndefinedTable),
    ):
        conn.execute("select * from kept")
    fresh.signal(signal.SIGTERM)
    assert fresh.wait_exit() == 0
