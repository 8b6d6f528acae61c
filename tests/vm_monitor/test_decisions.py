"""Scaling decisions from memory figures the test writes into a fake cgroup directory.

Time is a manual clock: ``clock.advance(0.1)`` is exactly one more 100 ms sample, and a
health-check round trip (``agent.barrier()``) proves what the monitor did before it.
"""

from __future__ import annotations

import asyncio

import prometheus_client

from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor import fakeclock
from tests.vm_monitor.conftest import FakeCgroup, GiB, MiB, StartMonitor, connected, sample


async def test_downscale_waits_for_samples_then_approves_with_upstream_status(
    start_monitor: StartMonitor,
    cgroup: FakeCgroup,
    clock: fakeclock.FakeClock,
    registry: prometheus_client.CollectorRegistry,
) -> None:
    cgroup.set(300)
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        connected(url) as agent,
    ):
        first = await agent.downscale(1 * GiB)
        assert first.raw == (
            '{"type":"DownscaleResult","Ok":false,'
            '"Status":"haven\'t received enough cgroup memory stats yet","id":4}'
        )
        await clock.advance(0.1)
        second = await agent.downscale(1 * GiB)
        # usable 924 MiB; threshold floor(0.85 * 924 MiB) = 785.4 MiB; initial 0.85 * MemTotal.
        assert second.raw == (
            '{"type":"DownscaleResult","Ok":true,"Status":"set cgroup memory threshold '
            'from 3481.6 MiB to 785.4 MiB, of new total 924 MiB","id":6}'
        )
        assert sample(registry, "vm_monitor_downscale_decisions_total", decision="denied") == 1
        assert sample(registry, "vm_monitor_downscale_decisions_total", decision="approved") == 1
        assert sample(registry, "vm_monitor_requests_total", type="DownscaleRequest") == 2


async def test_downscale_denied_when_anonymous_memory_leaves_no_room(
    start_monitor: StartMonitor, cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    cgroup.set(700)
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        connected(url) as agent,
    ):
        await clock.advance(0.1)
        denied = await agent.downscale(1 * GiB)
        assert denied.body == {
            "type": "DownscaleResult",
            "Ok": False,
            "Status": "calculated memory threshold too low: 785.4 MiB (new threshold) "
            "< 700 (current usage) + 100 (downscale buffer)",
            "id": 4,
        }
        # The average over the window decides: after five samples at 500 MiB it fits.
        cgroup.set(500)
        for _ in range(5):
            await clock.advance(0.1)
        approved = await agent.downscale(1 * GiB)
        assert approved.body["Ok"] is True


async def test_upscale_requests_follow_rising_memory_at_most_once_a_second(
    start_monitor: StartMonitor,
    cgroup: FakeCgroup,
    clock: fakeclock.FakeClock,
    registry: prometheus_client.CollectorRegistry,
) -> None:
    # MemTotal 1 GiB: the initial threshold is 0.85 GiB = 870.4 MiB (no buffer subtracted).
    cgroup.set(500)
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=1 * GiB) as url,
        connected(url) as agent,
    ):
        for _ in range(4):
            await clock.advance(0.1)
        assert await agent.barrier() == []

        # Window averages: 600, 700, 800 (below), then 900 MiB >= 870.4 MiB.
        cgroup.set(1000)
        for _ in range(3):
            await clock.advance(0.1)
            assert await agent.barrier() == []
        await clock.advance(0.1)
        request = await agent.wait_type("UpscaleRequest")
        assert request.raw == '{"type":"UpscaleRequest","id":3}'
        assert await agent.barrier() == []

        # Still above the threshold: silence for the rest of the second...
        for _ in range(9):
            await clock.advance(0.1)
        assert await agent.barrier() == []
        # ...then the next odd id.
        await clock.advance(0.15)
        again = await agent.wait_type("UpscaleRequest")
        assert again.raw == '{"type":"UpscaleRequest","id":5}'

        # Granted 2 GiB: threshold 0.85 * (2048 - 100) MiB = 1655.8 MiB; 1000 MiB is fine.
        confirmation = await agent.upscale(2 * GiB)
        assert confirmation.raw == '{"type":"UpscaleConfirmation","id":16}'  # 8th request
        for _ in range(12):
            await clock.advance(0.1)
        assert [f.type for f in await agent.barrier()] == []
        assert sample(registry, "vm_monitor_upscale_requests_total") == 2
        assert sample(registry, "vm_monitor_requests_total", type="UpscaleNotification") == 1


async def test_stale_figures_are_an_internal_error_not_a_guess(
    start_monitor: StartMonitor, cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    cgroup.set(300)
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        connected(url) as agent,
    ):
        await clock.advance(0.1)
        cgroup.remove()
        await clock.advance(4.9)
        # 4.9 s old: still usable.
        assert (await agent.downscale(1 * GiB)).body["Ok"] is True
        await clock.advance(0.2)
        failed = await agent.downscale(1 * GiB)
        assert failed.raw == '{"type":"InternalError","error":"failed to downscale","id":6}'
        # The connection survives, and fresh figures bring decisions back.
        cgroup.set(300)
        await clock.advance(0.1)
        assert (await agent.downscale(1 * GiB)).body["Ok"] is True


async def test_unusable_cgroup_fails_the_connection_setup(
    start_monitor: StartMonitor, cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    cgroup.remove()
    cgroup.path.joinpath("memory.stat").write_text("anon 1\n")  # no active/inactive keys
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        agent_mod.Agent.connect(url) as agent,
    ):
        assert (await agent.handshake()).raw == '{"version":1}'
        # Checked at setup (as upstream's watcher creation): the connection is closed.
        assert await agent.wait_closed() == 1011


async def test_health_check_is_echoed_with_its_id(
    start_monitor: StartMonitor, cgroup: FakeCgroup, clock: fakeclock.FakeClock
) -> None:
    async with (
        start_monitor(cgroup_path=cgroup.path, clock=clock, mem_total=4 * GiB) as url,
        connected(url) as agent,
    ):
        echoes = [await agent.health_check() for _ in range(3)]
        assert [e.raw for e in echoes] == [f'{{"type":"HealthCheck","id":{i}}}' for i in (4, 6, 8)]
        assert agent.inbox == []


async def test_nothing_managed_approves_and_confirms_at_once(start_monitor: StartMonitor) -> None:
    async with start_monitor() as url, connected(url) as agent:
        approved = await agent.downscale(256 * MiB)
        assert approved.raw == (
            '{"type":"DownscaleResult","Ok":true,'
            '"Status":"monitor is not managing cgroup or file cache","id":4}'
        )
        confirmed = await agent.upscale(8 * GiB)
        assert confirmed.raw == '{"type":"UpscaleConfirmation","id":6}'


async def test_real_time_sampling_requests_upscale_and_rate_limits(
    start_monitor: StartMonitor, cgroup: FakeCgroup
) -> None:
    """The default clock: 100 ms sampling really runs, and the 1 s limit holds in real time."""
    cgroup.set(1000)
    async with (
        start_monitor(cgroup_path=cgroup.path, mem_total=1 * GiB) as url,
        connected(url) as agent,
    ):
        loop_time = asyncio.get_running_loop().time
        first = await agent.wait_type("UpscaleRequest", timeout=5)
        t0 = loop_time()
        second = await agent.wait_for(lambda f: f.type == "UpscaleRequest" and f.id == 5, timeout=5)
        elapsed = loop_time() - t0
        assert (first.id, second.id) == (3, 5)
        # Without the limit the second would follow 0.1 s later; loose bounds for a busy host.
        assert 0.5 <= elapsed <= 3.0, elapsed
