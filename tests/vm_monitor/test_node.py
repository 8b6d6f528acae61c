"""The vm-monitor inside a real ComputeNode: only with AUTOSCALING, only once postgres is
up, gone when postgres stops; postgres launched into the (fake) cgroup; the LFC
connection string from the params."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from compute_ctl.compute import node, state
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.vm_monitor import cgroup as cgroup_mod
from tests import pgserver
from tests.core import applier, helpers
from tests.vm_monitor import agent as agent_mod
from tests.vm_monitor.conftest import connected

pytestmark = pytest.mark.postgres
S = state.ComputeStatus


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = pgserver.scratch_dir("vmmon-node-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _node(scratch: Path, *, autoscaling: bool) -> tuple[node.ComputeNode, int, str]:
    port = pgserver.free_port()
    cgroup_root = scratch / "cgroups"
    fake = cgroup_root / "neon-postgres"
    fake.mkdir(parents=True)
    (fake / "cgroup.procs").write_text("")
    # Anonymous memory at MemTotal: above 0.85 of it, so the monitor asks for more.
    anon = cgroup_mod.read_mem_total()
    (fake / "memory.stat").write_text(f"active_anon {anon}\ninactive_anon 0\n")
    addr = f"127.0.0.1:{pgserver.free_port()}"
    params = helpers.make_params(
        pgdata=scratch / "pgdata",
        port=port,
        autoscaling=autoscaling,
        cgroup_root=cgroup_root,
        vm_monitor_addr=addr,  # Neon's default --filecache-connstr: through the socket
    )
    n = node.ComputeNode(
        params,
        config=spec_mod.ComputeConfig(spec=None),
        catalog=applier.SqlApplier(),
    )
    return n, port, f"ws://{addr}/monitor"


async def _refused(url: str) -> bool:
    try:
        async with agent_mod.Agent.connect(url):
            return False
    except aiohttp.ClientConnectionError:
        return True


async def test_monitor_runs_while_postgres_runs(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.vm_monitor")
    n, port, url = _node(scratch, autoscaling=True)
    async with helpers.run_node(n, until=S.EMPTY):
        assert await _refused(url)  # no postgres yet: nothing listens
        await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        assert n.postmaster is not None
        procs = (scratch / "cgroups" / "neon-postgres" / "cgroup.procs").read_text()
        assert str(n.postmaster.pid) in procs.split()

        async with connected(url) as agent:
            request = await agent.wait_type("UpscaleRequest", timeout=3)
            assert request.raw == '{"type":"UpscaleRequest","id":3}'
            terminating = asyncio.create_task(n.terminate("fast"))
            assert await agent.wait_closed() == 1001
            await terminating
        assert await _refused(url)
    # The LFC connection came from the params; vanilla PostgreSQL has no LFC setting.
    assert "setting neon.file_cache_size_limit does not exist" in caplog.text


async def test_no_monitor_without_autoscaling(scratch: Path) -> None:
    n, port, url = _node(scratch, autoscaling=False)
    async with helpers.run_node(n, until=S.EMPTY):
        await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        assert n.state.status is S.RUNNING
        assert await _refused(url)
        assert (scratch / "cgroups" / "neon-postgres" / "cgroup.procs").read_text() == ""


async def test_monitor_stops_when_postgres_dies(scratch: Path) -> None:
    n, port, url = _node(scratch, autoscaling=True)
    async with helpers.run_node(n, until=S.EMPTY) as run:
        await n.configure(spec_mod.ComputeConfig(spec=helpers.make_spec(port=port)))
        async with connected(url) as agent:
            assert n.postmaster is not None
            await asyncio.to_thread(_kill, n.postmaster.pid)
            assert await agent.wait_closed() == 1001
        await asyncio.wait_for(run, 30)
        assert await _refused(url)


def _kill(pid: int) -> None:
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
