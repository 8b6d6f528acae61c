"""Truthful status: a dead postmaster is noticed within a second, whatever its children do.

Backends inherit the postmaster's stdout pipe; on Python 3.11 ``asyncio``'s
``Process.wait()`` returns only once that pipe closes, so a busy backend kept a
SIGKILLed postmaster ``running`` for as long as its query ran (issue 12, item 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from compute_ctl.compute import node, state
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers

pytestmark = pytest.mark.postgres
S = state.ComputeStatus

# Busy, not sleeping: pg_sleep waits on a latch that exits on postmaster death, but a
# backend computing never looks. Bounded, so a failing test does not burn a core for long.
_BUSY = """
do $$
declare stop timestamptz := clock_timestamp() + interval '30 s';
begin
  while clock_timestamp() < stop loop end loop;
end $$
"""


async def test_postmaster_killed_under_a_busy_backend_leaves_running_at_once(
    scratch: Path,
) -> None:
    port = pgserver.free_port()
    n = node.ComputeNode(
        helpers.make_params(pgdata=scratch / "pgdata", port=port),
        config=spec_mod.ComputeConfig(spec=helpers.make_spec(port=port, roles=[], databases=[])),
    )
    async with helpers.run_node(n, until=S.RUNNING) as run:
        assert n.postmaster is not None
        conn = await psycopg.AsyncConnection.connect(n.connstr(), autocommit=True)
        backend = conn.info.backend_pid
        busy = asyncio.create_task(conn.execute(_BUSY))
        try:
            await helpers.wait_until(
                lambda: helpers.alive(backend) and _running_query(backend), what="busy backend"
            )
            os.kill(n.postmaster.pid, signal.SIGKILL)
            killed = time.monotonic()
            await helpers.wait_until(
                lambda: n.state.status is not S.RUNNING, timeout=3, what="status to leave running"
            )
            noticed = time.monotonic() - killed
            assert helpers.alive(backend)  # the backend still holds the pipe
            assert n.state.status is S.FAILED
            assert "postgres exited" in (n.state.error or "")
            assert noticed < 1.5, noticed
            assert await asyncio.wait_for(run, 10) == 1  # killed by a signal: Neon's 1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(backend, signal.SIGKILL)
            busy.cancel()
            with contextlib.suppress(BaseException):
                await busy
            with contextlib.suppress(Exception):
                await conn.close()


def _running_query(pid: int) -> bool:
    """The backend is on CPU (state R), i.e. in the busy loop, not idle."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "R"
    except FileNotFoundError:
        return False
