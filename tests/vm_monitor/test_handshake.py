"""The version-range handshake: the agent's first frame, and our one-frame answer."""

from __future__ import annotations

import prometheus_client
import pytest

from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor.conftest import StartMonitor, sample


@pytest.mark.parametrize(("low", "high"), [(1, 1), (0, 1), (1, 5), (0, 255)])
async def test_overlapping_ranges_agree_on_v1(
    start_monitor: StartMonitor, low: int, high: int
) -> None:
    async with start_monitor() as url, agent_mod.Agent.connect(url) as agent:
        answer = await agent.handshake(min=low, max=high)
        assert answer.raw == '{"version":1}'
        assert (await agent.health_check()).type == "HealthCheck"


@pytest.mark.parametrize(
    ("low", "high", "shown"),
    [
        (2, 3, "<unknown: 2> to <unknown: 3>"),
        (2, 2, "<unknown: 2>"),
        (0, 0, "<invalid: zero>"),
    ],
)
async def test_non_overlapping_range_gets_upstream_error_then_close(
    start_monitor: StartMonitor,
    registry: prometheus_client.CollectorRegistry,
    low: int,
    high: int,
    shown: str,
) -> None:
    async with start_monitor() as url, agent_mod.Agent.connect(url) as agent:
        answer = await agent.handshake(min=low, max=high)
        assert answer.raw == (
            f'{{"error":"Received protocol version range {shown} '
            'which does not overlap with v1.0"}'
        )
        assert await agent.wait_closed() == 1002
        assert sample(registry, "vm_monitor_connections_total", outcome="handshake_failed") == 1


async def test_inverted_range_is_refused(start_monitor: StartMonitor) -> None:
    async with start_monitor() as url, agent_mod.Agent.connect(url) as agent:
        answer = await agent.handshake(min=3, max=1)
        assert (
            "min version = <unknown: 3> is greater than max version = v1.0" in answer.body["error"]
        )
        assert set(answer.body) == {"error"}
        assert await agent.wait_closed() == 1002


@pytest.mark.parametrize(
    "first",
    [
        # An envelope before the handshake: out of order.
        '{"content":{},"type":"HealthCheck","id":2}',
        '{"min":1}',
        '{"min":"1","max":"1"}',
        "not json",
    ],
)
async def test_anything_but_a_range_first_is_refused(
    start_monitor: StartMonitor, first: str
) -> None:
    async with start_monitor() as url, agent_mod.Agent.connect(url) as agent:
        await agent.ws.send_str(first)
        code = await agent.wait_closed()
        assert code == 1002
        # One answer, in the handshake's shape (beyond upstream, which answers nothing).
        [answer] = agent.inbox
        assert set(answer.body) == {"error"}
        assert answer.body["error"].startswith("failed to deserialize protocol version range")


async def test_binary_first_frame_is_refused(start_monitor: StartMonitor) -> None:
    async with start_monitor() as url, agent_mod.Agent.connect(url) as agent:
        await agent.ws.send_bytes(b'{"min":1,"max":1}')
        assert await agent.wait_closed() == 1002
        [answer] = agent.inbox
        assert "non-text" in answer.body["error"]
