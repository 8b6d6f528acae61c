"""No transient fault wedges a healthy compute (issue 12, items 11 and 12).

One compute for the module (real PostgreSQL, real signals), with a short apply bound.
Each fault makes the ``/configure`` that hit it fail (500, naming phase and object),
leaves the compute ``running`` on its last applied spec with ``pending_error`` set and
that spec's ``postgresql.conf`` on disk, and is retried until the desired spec applies,
without a restart. A termination cancels a stuck apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from compute_ctl.compute import errors, node, state
from compute_ctl.compute.http import translate
from tests import pgserver
from tests.core import helpers

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
S = state.ComputeStatus
APPLY_TIMEOUT = 3.0


class Compute:
    def __init__(self, n: node.ComputeNode, port: int) -> None:
        self.node = n
        self.port = port
        self.admin = f"postgresql://{helpers.SUPERUSER}@127.0.0.1:{port}/postgres"
        self.generation = 0

    def spec(self, *, roles: list[str], databases: list[tuple[str, str]], **kw: Any) -> Any:
        return helpers.spec_json(port=self.port, roles=roles, databases=databases, **kw)

    async def configure(self, body: dict[str, Any]) -> None:
        await self.node.configure(helpers.config(body))

    async def converged(self, *, timeout: float = 30.0) -> None:
        """Running, the desired spec applied, nothing pending."""
        s = self.node.state
        await helpers.wait_until(
            lambda: (
                s.status is S.RUNNING
                and s.applied_generation == s.desired_generation
                and s.applied_hash == s.desired_hash
                and s.pending_error is None
            ),
            timeout=timeout,
            what="the desired spec to apply",
        )

    def conf(self) -> str:
        return (self.node.params.pgdata / "postgresql.conf").read_text()

    def applied_conf(self) -> str:
        applied = self.node._applied
        assert applied is not None
        return applied.conf

    async def compute_ctl_waits_for_lock(self) -> int:
        """The pid of a compute_ctl session waiting for a lock, once there is one."""
        deadline = time.monotonic() + 20
        async with await psycopg.AsyncConnection.connect(self.admin, autocommit=True) as conn:
            while time.monotonic() < deadline:
                cur = await conn.execute(
                    "select pid from pg_stat_activity where application_name = 'compute_ctl' "
                    "and wait_event_type = 'Lock'"
                )
                row = await cur.fetchone()
                if row is not None:
                    return int(row[0])
                await asyncio.sleep(0.01)
        raise TimeoutError("compute_ctl never waited for the lock")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute() -> AsyncIterator[Compute]:
    base = pgserver.scratch_dir("core-faults-")
    port = pgserver.free_port()
    n = node.ComputeNode(
        helpers.make_params(
            pgdata=base / "pgdata",
            port=port,
            apply_timeout=APPLY_TIMEOUT,
            resync_interval=3600,
            trust_superuser_on_loopback=True,  # the tests connect over TCP as the superuser
        ),
        config=helpers.config(helpers.spec_json(port=port)),
    )
    try:
        async with helpers.run_node(n):
            yield Compute(n, port)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _answer(e: errors.ComputeError) -> int:
    answer = translate.status_and_message(e)
    assert answer is not None
    return answer[0]


async def _fails(c: Compute, body: dict[str, Any]) -> str:
    """``/configure`` answers 500; the compute stays running on its last applied spec."""
    applied = c.node.state.applied_hash
    with pytest.raises(errors.ComputeError) as failed:
        await c.configure(body)
    assert _answer(failed.value) == 500
    s = c.node.state
    assert s.status in (S.RUNNING, S.CONFIGURATION_PENDING, S.CONFIGURATION)
    assert s.error is None  # Neon's field: only for failed
    assert s.pending_error is not None
    assert s.applied_hash == applied
    assert s.desired_hash != applied  # still wanted: retried
    return str(failed.value)


async def _role_exists(c: Compute, role: str) -> bool:
    async with await psycopg.AsyncConnection.connect(c.admin) as conn:
        cur = await conn.execute("select 1 from pg_roles where rolname = %s", [role])
        return await cur.fetchone() is not None


async def _configure_with_postmaster_stopped(c: Compute, work_mem: str) -> str:
    """A ``/configure`` of ``work_mem`` while the postmaster is SIGSTOPped fails (its
    message is returned) with the applied spec's conf on disk; once it resumes, the spec
    converges without a restart."""
    pid = c.node.postmaster.pid if c.node.postmaster else 0
    body = c.spec(
        roles=["app_owner", "after_stop"],
        databases=[("appdb", "app_owner")],
        settings=[("work_mem", work_mem, "string")],
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        message = await _fails(c, body)
        # The conf on disk is the applied spec's, not the one that failed.
        assert c.conf() == c.applied_conf()
        assert f"work_mem = '{work_mem}'" not in c.conf()
    finally:
        os.kill(pid, signal.SIGCONT)
    await c.converged()
    assert c.node.postmaster is not None
    assert c.node.postmaster.pid == pid  # no restart
    assert f"work_mem = '{work_mem}'" in c.conf()
    assert await _role_exists(c, "after_stop")
    async with await psycopg.AsyncConnection.connect(c.admin) as conn:
        cur = await conn.execute("show work_mem")
        assert await cur.fetchone() == (work_mem,)
    return message


async def test_sigstopped_postmaster_during_configure(compute: Compute) -> None:
    message = await _configure_with_postmaster_stopped(compute, "5MB")
    assert "postgresql.conf: postgres did not answer" in message  # phase and cause


async def test_sigstopped_postmaster_with_the_maintenance_session_kept(compute: Compute) -> None:
    """As above, once the reconfigurations' kept session is open: its backend still
    answers (only the postmaster is stopped), so the conf check passes and the attempt
    stops at the reload, with the same outcome."""
    assert compute.node._maintenance.backend_pid is not None  # the previous /configure's
    message = await _configure_with_postmaster_stopped(compute, "6MB")
    assert "reload: postgres did not load its configuration" in message


async def test_held_role_lock_bounds_configure_then_converges(compute: Compute) -> None:
    c = compute
    body = c.spec(roles=["app_owner", "locked"], databases=[("appdb", "app_owner")])
    await c.configure(body)
    # A user's open transaction holds the role's row: our ALTER ROLE would wait forever.
    user = await psycopg.AsyncConnection.connect(c.admin)
    try:
        await user.execute("alter role locked connection limit 7")
        changed = c.spec(roles=["app_owner", "locked"], databases=[("appdb", "app_owner")])
        changed["cluster"]["roles"][1]["encrypted_password"] = helpers.scram("another")
        started = time.monotonic()
        message = await _fails(c, changed)
        elapsed = time.monotonic() - started
        assert APPLY_TIMEOUT - 0.5 < elapsed < APPLY_TIMEOUT + 3, elapsed
        assert "locked" in message
        assert "lock" in message
        assert c.node.state.pending_error is not None
        assert "locked" in c.node.state.pending_error
    finally:
        await user.rollback()
        await user.close()
    await c.converged()
    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=c.port, user="locked", dbname="postgres", password="another"
    ):
        pass


async def test_killed_backend_mid_apply(compute: Compute) -> None:
    c = compute
    pid = c.node.postmaster.pid if c.node.postmaster else 0
    user = await psycopg.AsyncConnection.connect(c.admin)
    await user.execute("alter role locked connection limit 8")
    body = c.spec(roles=["app_owner", "locked"], databases=[("appdb", "app_owner")])
    body["cluster"]["roles"][1]["encrypted_password"] = helpers.scram("third")
    configure = asyncio.create_task(c.configure(body))
    try:
        backend = await c.compute_ctl_waits_for_lock()
        os.kill(backend, signal.SIGKILL)  # postgres restarts every backend (the user's too)
        with pytest.raises(errors.ComputeError) as failed:
            await configure
        assert _answer(failed.value) == 500
        assert c.node.state.status is not S.FAILED
    finally:
        with contextlib.suppress(Exception):
            await user.close()
    await c.converged(timeout=60)
    assert c.node.postmaster is not None
    assert c.node.postmaster.pid == pid  # the postmaster itself never restarted
    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=c.port, user="locked", dbname="postgres", password="third"
    ):
        pass


async def test_template1_in_use_during_create_database(compute: Compute) -> None:
    c = compute
    holder = await psycopg.AsyncConnection.connect(c.admin.replace("/postgres", "/template1"))
    try:
        body = c.spec(
            roles=["app_owner", "locked"],
            databases=[("appdb", "app_owner"), ("newdb", "app_owner")],
        )
        body["cluster"]["roles"][1]["encrypted_password"] = helpers.scram("third")
        message = await _fails(c, body)
        assert "newdb" in message
        assert "template1" in message
    finally:
        await holder.close()
    await c.converged()
    async with await psycopg.AsyncConnection.connect(c.admin.replace("/postgres", "/newdb")):
        pass


async def test_terminate_cancels_a_stuck_apply(compute: Compute) -> None:
    """Last in the module: it ends the compute."""
    c = compute
    # Stuck for good, but for the termination.
    c.node.params = dataclasses.replace(c.node.params, apply_timeout=600.0)
    user = await psycopg.AsyncConnection.connect(c.admin)
    try:
        await user.execute("alter role locked connection limit 9")
        body = c.spec(roles=["app_owner", "locked"], databases=[("appdb", "app_owner")])
        body["cluster"]["roles"][1]["encrypted_password"] = helpers.scram("fourth")
        configure = asyncio.create_task(c.configure(body))
        await c.compute_ctl_waits_for_lock()
        assert c.node.state.status is S.CONFIGURATION
        started = time.monotonic()
        assert await asyncio.wait_for(c.node.terminate("fast"), 20) == (False, None)
        assert time.monotonic() - started < 10
        with pytest.raises(errors.ComputeError):
            await configure
        assert c.node.state.status.value == S.TERMINATED.value  # (mypy narrowed it above)
    finally:
        with contextlib.suppress(Exception):
            await user.close()
