"""Local file cache sizing, verified through the SQL the monitor sends to a real PostgreSQL.

Vanilla PostgreSQL has no ``neon.file_cache_size_limit``; placeholder settings
``compute_ctl_test.*`` stand in (PostgreSQL 15 lets ALTER SYSTEM set a placeholder only
once it exists, so they are defined in postgresql.conf at start). What the monitor sent is
read back from pg_stat_statements (PostgreSQL 15 keeps utility statements verbatim).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import LiteralString

import prometheus_client
import psycopg
import pytest

from compute_ctl.compute.vm_monitor import filecache
from tests import pgserver
from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor.conftest import GiB, StartMonitor, connected, sample

pytestmark = pytest.mark.postgres

SETTINGS = filecache.Settings(
    limit="compute_ctl_test.file_cache_size_limit", max="compute_ctl_test.max_file_cache_size"
)
ALTER = 'ALTER SYSTEM SET "compute_ctl_test"."file_cache_size_limit" = {}'
RELOAD = "SELECT pg_reload_conf()"


async def _query(dsn: str, query: LiteralString) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)
        return await cur.fetchall() if cur.description else []


async def sent(pg: pgserver.PgServer) -> dict[str, int]:
    """ALTER SYSTEM and reload statements run since the last call (then forgotten)."""
    rows = await _query(
        pg.dsn(),
        "SELECT query, calls FROM pg_stat_statements "
        "WHERE query LIKE 'ALTER SYSTEM%' OR query = 'SELECT pg_reload_conf()'",
    )
    await _query(pg.dsn(), "SELECT pg_stat_statements_reset()")
    return {str(q): int(str(c)) for q, c in rows}


@pytest.fixture(scope="module")
def lfc_server() -> Iterator[pgserver.PgServer]:
    """One PostgreSQL for this module, with the placeholder settings defined at start."""
    server = pgserver.PgServer.create(extra_conf=f"{SETTINGS.max} = '2GB'\n{SETTINGS.limit} = 0")
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield server
    finally:
        server.stop()


@pytest.fixture
async def lfc_pg(lfc_server: pgserver.PgServer) -> pgserver.PgServer:
    await sent(lfc_server)
    return lfc_server


async def test_lfc_sized_at_connect_upscale_and_downscale(
    lfc_pg: pgserver.PgServer, start_monitor: StartMonitor
) -> None:
    async with start_monitor(
        filecache_connstr=lfc_pg.dsn(), lfc_settings=SETTINGS, mem_total=1 * GiB
    ) as url:
        async with connected(url) as agent:  # set up (sized) once the health check is answered
            # MemTotal 1 GiB: min((1024 - 256) / 1.1, 0.75 * 1024) = 698 MiB.
            assert await sent(lfc_pg) == {ALTER.format(698): 1, RELOAD: 1}

            # Granted 4 GiB: 3996 MiB usable -> 2997 MiB, capped at the 2 GB maximum.
            assert (await agent.upscale(4 * GiB)).type == "UpscaleConfirmation"
            assert await sent(lfc_pg) == {ALTER.format(2048): 1, RELOAD: 1}

            # Down to 1 GiB: 924 MiB usable -> 607 MiB.
            result = await agent.downscale(1 * GiB)
            assert result.body["Ok"] is True
            assert result.body["Status"] == "set file cache size to 607 MiB"
            assert await sent(lfc_pg) == {ALTER.format(607): 1, RELOAD: 1}

        # Per connection: the next one sizes again from MemTotal, even if unchanged.
        async with connected(url):
            assert await sent(lfc_pg) == {ALTER.format(698): 1, RELOAD: 1}

    auto_conf = (lfc_pg.datadir / "postgresql.auto.conf").read_text()
    assert f"{SETTINGS.limit} = '698'" in auto_conf


async def test_disable_lfc_resizing_sends_nothing(
    lfc_pg: pgserver.PgServer, start_monitor: StartMonitor
) -> None:
    async with (
        start_monitor(
            filecache_connstr=lfc_pg.dsn(),
            disable_lfc_resizing=True,
            lfc_settings=SETTINGS,
            mem_total=1 * GiB,
        ) as url,
        connected(url) as agent,
    ):
        assert (await agent.upscale(4 * GiB)).type == "UpscaleConfirmation"
        status = (await agent.downscale(1 * GiB)).body["Status"]
        assert status == "monitor is not managing cgroup or file cache"
    assert await sent(lfc_pg) == {}


async def test_missing_setting_skips_sizing_with_one_log_line(
    lfc_pg: pgserver.PgServer, start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.vm_monitor")
    # Neon's own setting names: vanilla PostgreSQL has neither.
    async with start_monitor(filecache_connstr=lfc_pg.dsn(), mem_total=1 * GiB) as url:
        for _ in range(2):
            async with connected(url) as agent:
                status = (await agent.downscale(1 * GiB)).body["Status"]
                assert status == "monitor is not managing cgroup or file cache"
    lines = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert lines == [
        "setting neon.file_cache_size_limit does not exist on this PostgreSQL: "
        "local file cache sizing skipped (no neon extension?)"
    ]
    assert await sent(lfc_pg) == {}


async def test_sql_failure_is_an_internal_error_and_the_connection_survives(
    lfc_pg: pgserver.PgServer,
    start_monitor: StartMonitor,
    registry: prometheus_client.CollectorRegistry,
) -> None:
    await _query(lfc_pg.dsn(), "CREATE ROLE lfc_monitor LOGIN SUPERUSER")
    async with (
        start_monitor(
            filecache_connstr=lfc_pg.dsn(user="lfc_monitor"),
            lfc_settings=SETTINGS,
            mem_total=1 * GiB,
        ) as url,
        connected(url) as agent,
    ):
        # ALTER SYSTEM needs superuser: take it away under the live connection.
        await _query(lfc_pg.dsn(), "ALTER ROLE lfc_monitor NOSUPERUSER")
        failed = await agent.upscale(2 * GiB)
        assert (
            failed.raw
            == f'{{"type":"InternalError","error":"failed to handle upscale","id":{failed.id}}}'
        )
        failed = await agent.downscale(1 * GiB)
        assert failed.body == {
            "type": "InternalError",
            "error": "failed to downscale",
            "id": failed.id,
        }
        assert (await agent.health_check()).type == "HealthCheck"
        assert sample(registry, "vm_monitor_downscale_decisions_total", decision="error") == 1


async def test_unreachable_postgres_fails_the_connection_setup(
    start_monitor: StartMonitor, registry: prometheus_client.CollectorRegistry
) -> None:
    dsn = f"postgresql://cloud_admin@127.0.0.1:{pgserver.free_port()}/postgres"
    async with start_monitor(filecache_connstr=dsn, mem_total=1 * GiB) as url:
        async with agent_mod.Agent.connect(url) as agent:
            assert (await agent.handshake()).raw == '{"version":1}'
            assert await agent.wait_closed() == 1011
        assert sample(registry, "vm_monitor_connections_total", outcome="setup_failed") == 1
