"""A real cgroup v2 memory controller: postgres runs in a child cgroup and the monitor's
figures come from it. Skipped (with a one-line reason) where the machine does not allow
creating a child cgroup with the memory controller under /sys/fs/cgroup."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from compute_ctl.compute.vm_monitor import cgroup as cgroup_mod
from tests import pgserver
from tests.vm_monitor import fakeclock
from tests.vm_monitor.conftest import MiB, StartMonitor, connected

pytestmark = pytest.mark.postgres

ROOT = Path("/sys/fs/cgroup")


def _make_child() -> Path:
    """A fresh child cgroup with memory accounting, or ``pytest.skip`` saying why not."""
    controllers = ROOT / "cgroup.controllers"
    if not controllers.is_file():
        pytest.skip(f"no cgroup v2 unified hierarchy at {ROOT}")
    if "memory" not in controllers.read_text().split():
        pytest.skip(f"the memory controller is not available in {ROOT}")
    if not os.access(ROOT, os.W_OK):
        pytest.skip(f"{ROOT} is not writable")
    if "memory" not in (ROOT / "cgroup.subtree_control").read_text().split():
        try:
            (ROOT / "cgroup.subtree_control").write_text("+memory")
        except OSError as e:
            pytest.skip(f"cannot enable the memory controller for children of {ROOT}: {e}")
    child = ROOT / f"compute-ctl-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a child cgroup under {ROOT}: {e}")
    if not (child / "memory.stat").is_file():
        child.rmdir()
        pytest.skip(f"child cgroups of {ROOT} get no memory.stat")
    return child


def _postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                # Field 4 of /proc/<pid>/stat is the parent pid (after the ")" of comm).
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


@pytest.fixture
def pg_in_cgroup() -> Iterator[tuple[pgserver.PgServer, Path]]:
    child = _make_child()
    server = pgserver.PgServer.create()
    try:
        assert server.proc is not None
        # The postmaster and its auxiliary processes; backends forked later inherit it.
        for pid in _postgres_pids(server.proc.pid):
            with contextlib.suppress(ProcessLookupError, OSError):
                (child / "cgroup.procs").write_text(str(pid))
        yield server, child
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            child.rmdir()


def _current_usage(status: str) -> float:
    match = re.search(r"< ([0-9.]+) \(current usage\)", status)
    assert match, status
    return float(match.group(1))


async def test_figures_come_from_postgres_cgroup(
    pg_in_cgroup: tuple[pgserver.PgServer, Path],
    start_monitor: StartMonitor,
    clock: fakeclock.FakeClock,
) -> None:
    server, child = pg_in_cgroup
    assert server.proc is not None
    procs = {int(p) for p in (child / "cgroup.procs").read_text().split()}
    assert server.proc.pid in procs

    async with start_monitor(cgroup_path=child, clock=clock) as url, connected(url) as agent:
        for _ in range(5):
            await clock.advance(0.1)
        # A 100 MiB target leaves no usable memory: always denied, and the status says
        # what the monitor read as current usage. (Memory charged before postgres moved
        # in stays with the old cgroup, so this may be near zero.)
        before = _current_usage((await agent.downscale(100 * MiB)).body["Status"])
        on_disk = cgroup_mod.read_non_reclaimable(child) / MiB
        assert abs(before - on_disk) < 8, (before, on_disk)

        # A backend in the cgroup holding 64 MiB of temp buffers (local, anonymous memory).
        async with await psycopg.AsyncConnection.connect(server.dsn(), autocommit=True) as conn:
            backend = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert backend is not None
            assert str(backend[0]) in (child / "cgroup.procs").read_text().split()
            await conn.execute("SET temp_buffers = '80MB'")
            # ~60 MiB of rows too short to be compressed or toasted.
            await conn.execute(
                "CREATE TEMP TABLE filler AS "
                "SELECT repeat('x', 1000) AS x FROM generate_series(1, 60000)"
            )
            for _ in range(5):
                await clock.advance(0.1)
            after = _current_usage((await agent.downscale(100 * MiB)).body["Status"])
        assert after - before > 40, (before, after)
