"""One connection at a time, state per connection, and frames that are malformed or
arrive out of order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import prometheus_client
import pytest

from compute_ctl.compute import vm_monitor
from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor import fakeclock
from tests.vm_monitor.conftest import FakeCgroup, GiB, StartMonitor, connected, sample


async def test_second_connection_replaces_first_and_starts_afresh(
    start_monitor: StartMonitor,
    cgroup: FakeCgroup,
    clock: fakeclock.FakeClock,
    registry: prometheus_client.CollectorRegistry,
) -> None:
    cgroup.set(1000)  # above 0.85 * 1 GiB: every connection asks for more at once
    async with start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=1 * GiB) as url:
        async with connected(url) as first:
            await clock.advance(0.1)
            assert (await first.wait_type("UpscaleRequest")).id == 3
            assert (await first.downscale(1 * GiB)).body["Ok"] is False

            async with connected(url) as second:
                assert await first.wait_closed() == 1001
                # New connection, new state: ids from 3 again, no rate limit carried over
                # (the clock has not moved), and a fresh sample window.
                assert (await second.wait_type("UpscaleRequest")).raw == (
                    '{"type":"UpscaleRequest","id":3}'
                )
                status = (await second.downscale(4 * GiB)).body["Status"]
                assert status == "haven't received enough cgroup memory stats yet"
                assert (await second.health_check()).id == 6
        assert sample(registry, "vm_monitor_connections_total", outcome="established") == 2


async def test_the_newest_of_many_connections_wins(
    start_monitor: StartMonitor, cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        agent_mod.Agent.connect(url) as a,
        agent_mod.Agent.connect(url) as b,
        agent_mod.Agent.connect(url) as c,
    ):
        for agent in (a, b, c):
            await agent.ws.send_str('{"min":1,"max":1}')
        # The older two are closed (whether or not their handshake got answered)...
        assert await a.wait_closed() == 1001
        assert await b.wait_closed() == 1001
        # ...and the newest is served.
        assert (await c.next_frame_raw()) == '{"version":1}'
        assert (await c.health_check()).type == "HealthCheck"


async def test_agent_disconnect_ends_the_session(
    start_monitor: StartMonitor,
    cgroup: FakeCgroup,
    clock: fakeclock.FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.vm_monitor")
    async with start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url:
        async with connected(url) as agent:
            await agent.health_check()
        # The next connection must not wait for the previous one's grace period.
        async with connected(url) as agent:
            await agent.health_check()
    assert "vm-monitor connection ended: dispatcher connection closed" in caplog.text


async def test_stop_closes_the_live_connection(
    cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    monitor = vm_monitor.VmMonitor(
        addr="127.0.0.1:0",
        cgroup_path=cgroup.path,
        filecache_connstr=None,
        disable_lfc_resizing=False,
        options=vm_monitor.Options(clock=clock, mem_total=4 * GiB),
    )
    await monitor.start()
    url = f"ws://127.0.0.1:{monitor.port}/monitor"
    async with connected(url) as agent:
        await agent.health_check()
        stopping = asyncio.create_task(monitor.stop())
        assert await agent.wait_closed() == 1001
        await stopping
    with pytest.raises(aiohttp.ClientConnectionError):
        async with agent_mod.Agent.connect(url):
            pass


@pytest.mark.parametrize(
    ("frame", "reply_id", "error_part"),
    [
        ("{not json", 0, "Invalid JSON"),
        ('{"content":{},"type":"Foo","id":12}', 12, "'Foo'"),
        ('{"type":"HealthCheck","id":14}', 14, "HealthCheck.content: Field required"),
        ('{"content":{},"type":"HealthCheck"}', 0, "HealthCheck.id: Field required"),
        (
            '{"content":{"target":{"cpu":1,"mem":"1Gi"}},"type":"DownscaleRequest","id":16}',
            16,
            "DownscaleRequest.content.target.mem",
        ),
        ('{"content":{},"type":"HealthCheck","id":-2}', 0, "greater than or equal to 0"),
        ('[{"type":"HealthCheck"}]', 0, "object"),
        # Out of order: a second version range, and monitor-side message types.
        ('{"min":1,"max":1}', 0, "type"),
        ('{"content":{},"type":"UpscaleConfirmation","id":18}', 18, "UpscaleConfirmation"),
        ('{"content":{},"type":"UpscaleRequest","id":20}', 20, "UpscaleRequest"),
    ],
)
async def test_bad_frame_gets_invalid_message_and_connection_survives(
    start_monitor: StartMonitor,
    registry: prometheus_client.CollectorRegistry,
    frame: str,
    reply_id: int,
    error_part: str,
) -> None:
    async with start_monitor() as url, connected(url) as agent:
        await agent.ws.send_str(frame)
        reply = await agent.wait_type("InvalidMessage")
        assert reply.raw.startswith('{"type":"InvalidMessage","error":"failed to deserialize')
        assert reply.raw.endswith(f',"id":{reply_id}}}')
        assert list(reply.body) == ["type", "error", "id"]
        assert error_part in reply.body["error"]
        # Upstream would have dropped the connection here; we carry on.
        assert (await agent.downscale(GiB)).body["Ok"] is True
        assert sample(registry, "vm_monitor_requests_total", type="invalid") == 1


async def test_agent_error_reports_and_binary_frames_get_no_reply(
    start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.vm_monitor")
    async with start_monitor() as url, connected(url) as agent:
        await agent.send("InvalidMessage", {"error": "Received X with id 3 but id is unknown"})
        await agent.send("InternalError", {"error": "agent broke"})
        await agent.ws.send_bytes(b"\x00\x01")
        assert await agent.barrier() == []
        assert agent.inbox == []
    assert "invalid message we sent" in caplog.text
    assert "agent experienced an internal error" in caplog.text
    assert "agent should only send text messages" in caplog.text


@pytest.fixture
async def silent_postgres() -> AsyncIterator[str]:
    """A TCP port that accepts connections and never says a word (a wedged postgres)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://cloud_admin@127.0.0.1:{port}/postgres?connect_timeout=30"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_setup_that_takes_too_long_closes_the_connection(
    start_monitor: StartMonitor,
    silent_postgres: str,
    registry: prometheus_client.CollectorRegistry,
) -> None:
    async with (
        start_monitor(filecache_connstr=silent_postgres, mem_total=GiB, setup_timeout=0.3) as url,
        agent_mod.Agent.connect(url) as agent,
    ):
        assert (await agent.handshake()).raw == '{"version":1}'
        assert await agent.wait_closed(timeout=3) == 1011
        assert sample(registry, "vm_monitor_connections_total", outcome="timeout") == 1


async def test_newer_connection_and_stop_cut_a_setup_short(silent_postgres: str) -> None:
    # A 30 s setup budget: only a kill can end a stuck setup quickly.
    monitor = vm_monitor.VmMonitor(
        addr="127.0.0.1:0",
        cgroup_path=None,
        filecache_connstr=silent_postgres,
        disable_lfc_resizing=False,
        options=vm_monitor.Options(mem_total=GiB, setup_timeout=30),
    )
    await monitor.start()
    url = f"ws://127.0.0.1:{monitor.port}/monitor"
    try:
        async with agent_mod.Agent.connect(url) as first:
            assert (await first.handshake()).raw == '{"version":1}'  # now stuck in LFC setup
            async with agent_mod.Agent.connect(url) as second:
                await second.ws.send_str('{"min":1,"max":1}')
                assert await first.wait_closed(timeout=1.5) == 1001
                assert await second.next_frame_raw() == '{"version":1}'
                stopping = asyncio.create_task(monitor.stop())
                assert await second.wait_closed(timeout=1.5) == 1001
                await stopping
    finally:
        await monitor.stop()
