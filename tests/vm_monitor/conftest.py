"""Fixtures for the vm-monitor tier: a fake cgroup directory, a manual clock, a monitor
factory on a free loopback port, and a Prometheus registry to read counters from."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from compute_ctl.compute import vm_monitor
from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor import fakeclock

MiB = 1 << 20
GiB = 1 << 30


@dataclasses.dataclass
class FakeCgroup:
    """A directory shaped like a cgroup v2 memory controller, with figures the test sets."""

    path: Path

    def set(self, anon_mib: float) -> None:
        """Anonymous memory of ``anon_mib`` MiB, split 3:1 between active and inactive."""
        total = int(anon_mib * MiB)
        active = total * 3 // 4
        stat = (
            f"anon {total}\nfile {512 * MiB}\nkernel 1048576\nshmem 0\n"
            f"active_anon {active}\ninactive_anon {total - active}\n"
            f"active_file {256 * MiB}\ninactive_file {256 * MiB}\nunevictable 0\n"
        )
        tmp = self.path / "memory.stat.tmp"
        tmp.write_text(stat)
        tmp.replace(self.path / "memory.stat")

    def remove(self) -> None:
        (self.path / "memory.stat").unlink()


@pytest.fixture
def cgroup(tmp_path: Path) -> FakeCgroup:
    path = tmp_path / "neon-postgres"
    path.mkdir()
    fake = FakeCgroup(path)
    fake.set(0)
    return fake


@pytest.fixture
def clock() -> fakeclock.FakeClock:
    return fakeclock.FakeClock()


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


def sample(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


StartMonitor = Callable[..., contextlib.AbstractAsyncContextManager[str]]


@pytest.fixture
def start_monitor(
    registry: prometheus_client.CollectorRegistry,
) -> StartMonitor:
    """``async with start_monitor(cgroup_path=..., ...) as url``: a running VmMonitor."""

    @contextlib.asynccontextmanager
    async def start(
        *,
        cgroup_path: Path | None = None,
        filecache_connstr: str | None = None,
        disable_lfc_resizing: bool = False,
        **options: Any,
    ) -> AsyncIterator[str]:
        monitor = vm_monitor.VmMonitor(
            addr="127.0.0.1:0",
            cgroup_path=cgroup_path,
            filecache_connstr=filecache_connstr,
            disable_lfc_resizing=disable_lfc_resizing,
            registry=registry,
            options=vm_monitor.Options(**options),
        )
        await monitor.start()
        try:
            yield f"ws://127.0.0.1:{monitor.port}/monitor"
        finally:
            await monitor.stop()

    return start


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[agent_mod.Agent]:
    """An agent past the handshake and the monitor's setup.

    The health check (id 2) is answered only once setup is done and the runner serves;
    by then its cgroup watcher has taken its first sample and sleeps on the clock.
    """
    async with agent_mod.Agent.connect(url) as agent:
        answer = await agent.handshake()
        assert answer.raw == '{"version":1}'
        assert (await agent.health_check()).id == 2
        yield agent
