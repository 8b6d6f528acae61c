"""The postmaster process layer against real PostgreSQL: stop modes, reload confirmation,
the cgroup join, and the PG: re-logging."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from compute_ctl.compute import errors, pgconf, pgdata, postgres
from tests import pgserver
from tests.core import helpers

pytestmark = pytest.mark.postgres

CGROUP2 = Path("/sys/fs/cgroup/unified")


def test_stop_modes_use_patronis_signals() -> None:
    assert postgres.STOP_SIGNALS == {
        postgres.StopMode.SMART: signal.SIGTERM,
        postgres.StopMode.FAST: signal.SIGINT,
        postgres.StopMode.IMMEDIATE: signal.SIGQUIT,
    }
    assert postgres.exit_code(0) == 0
    assert postgres.exit_code(3) == 3
    assert postgres.exit_code(-9) == 1  # Neon: killed by a signal -> 1


async def _pgdata(base: Path, port: int) -> Path:
    tools = pgserver.tools()
    data = base / "pgdata"
    await pgdata.init_fresh(pgdata=data, tools=tools, superuser=helpers.SUPERUSER, sync=False)
    spec = helpers.make_spec(port=port)
    conf = pgconf.render_postgresql_conf(
        spec, pgconf.ConfContext(local_port=port, socket_dir=pgdata.socket_dir_for(data))
    )
    pgdata.write_config_files(
        pgdata=data,
        user=tools.user,
        postgresql_conf=conf,
        hba=pgconf.render_hba(superuser=helpers.SUPERUSER),
    )
    return data


async def _spawn(data: Path, port: int, cgroup: Path | None = None) -> postgres.Postmaster:
    pm = await postgres.Postmaster.spawn(
        tools=pgserver.tools(),
        pgdata=data,
        connstr=make_conninfo(
            host=pgdata.socket_dir_for(data), port=port, user=helpers.SUPERUSER, dbname="postgres"
        ),
        cgroup_dir=cgroup,
    )
    await pm.wait_ready(timeout=30)
    return pm


@pytest.fixture
async def cluster(scratch: Path) -> tuple[Path, int]:
    port = pgserver.free_port()
    return await _pgdata(scratch, port), port


async def test_reload_returns_once_new_connections_see_the_change(
    cluster: tuple[Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    data, port = cluster
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.postgres")
    pm = await _spawn(data, port)
    try:
        # postmaster.pid says ready before the relay has logged the same line: wait for it.
        await helpers.wait_until(
            lambda: "ready to accept connections" in caplog.text, what="the relayed ready line"
        )
        assert "PG: " in caplog.text
        assert "database system is ready to accept connections" in caplog.text
        spec = helpers.make_spec(port=port, settings=[("work_mem", "9876kB", "string")])
        conf = pgconf.render_postgresql_conf(spec, pgconf.ConfContext(socket_dir=str(data)))
        pgdata.write_config_files(pgdata=data, user=pgserver.tools().user, postgresql_conf=conf)
        for _ in range(5):  # every time, with no sleeping: the very next connection sees it
            await pm.reload()
            async with await psycopg.AsyncConnection.connect(pm.connstr) as conn:
                cur = await conn.execute("show work_mem")
                assert await cur.fetchone() == ("9876kB",)
    finally:
        assert await pm.stop(postgres.StopMode.FAST) == 0
        await pm.close()
    assert "received fast shutdown request" in caplog.text


@pytest.mark.parametrize(
    ("mode", "logged"),
    [
        (postgres.StopMode.SMART, "received smart shutdown request"),
        (postgres.StopMode.IMMEDIATE, "received immediate shutdown request"),
    ],
)
async def test_stop_modes(
    cluster: tuple[Path, int],
    caplog: pytest.LogCaptureFixture,
    mode: postgres.StopMode,
    logged: str,
) -> None:
    data, port = cluster
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.postgres")
    pm = await _spawn(data, port)
    await pm.stop(mode)
    await pm.close()
    assert pm.returncode is not None
    assert logged in caplog.text
    assert not helpers.alive(pm.pid)


async def test_cgroup_join(cluster: tuple[Path, int]) -> None:
    if os.geteuid() != 0 or not os.access(CGROUP2, os.W_OK):
        pytest.skip("needs a writable cgroup2 hierarchy")
    data, port = cluster
    group = CGROUP2 / f"compute-ctl-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        pm = await _spawn(data, port, cgroup=group)
        try:
            assert str(pm.pid) in (group / "cgroup.procs").read_text().split()
            backends = (group / "cgroup.procs").read_text().split()
            assert len(backends) > 1  # its children (checkpointer, walwriter...) follow it
        finally:
            await pm.stop(postgres.StopMode.FAST)
            await pm.close()
        await helpers.wait_until(lambda: not (group / "cgroup.procs").read_text().strip())
    finally:
        group.rmdir()


async def test_missing_cgroup_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cgroup"):
        postgres.cgroup_preexec(tmp_path / "nope")


async def test_a_postmaster_that_dies_fails_the_wait_at_once(cluster: tuple[Path, int]) -> None:
    data, _port = cluster
    (data / "postgresql.conf").write_text("shared_buffers = 'nonsense'\n")
    pm = await postgres.Postmaster.spawn(
        tools=pgserver.tools(), pgdata=data, connstr="", cgroup_dir=None
    )
    with pytest.raises(errors.PostgresError, match="shared_buffers"):
        await asyncio.wait_for(pm.wait_ready(timeout=60), 15)
    await pm.close()
