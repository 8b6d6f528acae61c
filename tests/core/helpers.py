"""Helpers for core's tests: specs, params, condition waits, and process inspection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from compute_ctl.compute import node as node_mod
from compute_ctl.compute import params as params_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state
from tests import pgserver, support
from tests.support import compute_process, specs

SUPERUSER = support.SUPERUSER
ROLE_PASSWORD = "s3cret pass'word"
REPO = support.REPO
scram = specs.scram
# Process inspection lives with the compute process; core's tests reach it from here too.
wait_until_sync = compute_process.wait_until_sync
alive = compute_process.alive
processes_in = compute_process.processes_in


def spec_json(
    *,
    port: int,
    roles: Sequence[str] = ("app_owner",),
    databases: Sequence[tuple[str, str]] = (("appdb", "app_owner"),),
    settings: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """``specs.local_spec`` with core's owner role and database (password ROLE_PASSWORD)."""
    return specs.local_spec(
        port=port, roles=roles, databases=databases, settings=settings, password=ROLE_PASSWORD
    )


def make_spec(*, port: int, **kwargs: Any) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(spec_json(port=port, **kwargs))


def make_params(*, pgdata: Path, port: int, **overrides: Any) -> params_mod.Params:
    values: dict[str, Any] = {
        "pgdata": pgdata,
        "connstr": f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres",
        "compute_id": "compute-test",
        "external_http_port": pgserver.free_port(),
        "internal_http_port": pgserver.free_port(),
        "failed_exit_delay": 0.0,
    }
    values.update(overrides)
    return params_mod.Params(**values)


def role_dsn(port: int, *, role: str = "app_owner", dbname: str = "appdb") -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host="127.0.0.1", port=port, user=role, dbname=dbname, password=ROLE_PASSWORD
    )


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition with a deadline (never a bare sleep to synchronise)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def migrations_done(node: node_mod.ComputeNode) -> None:
    """Until the start's background migrations have finished (they alter roles and write
    WAL, which some tests must not race)."""
    await wait_until(
        lambda: node.state.migrations is None or node.state.migrations.state != "running",
        timeout=30,
        what="the start's migrations",
    )


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """``wait_until`` for a predicate that has to wait on I/O (a query, a connection)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def show(n: node_mod.ComputeNode, name: str) -> str:
    """A setting's value in effect, read as the superuser (over the socket, the only
    place pg_hba.conf trusts it)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(n.connstr()) as conn:
        cur = await conn.execute("select current_setting(%s)", [name])
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


@contextlib.asynccontextmanager
async def run_node(
    node: node_mod.ComputeNode, *, until: state.ComputeStatus | None = state.ComputeStatus.RUNNING
) -> AsyncIterator[asyncio.Task[int]]:
    """Run ``node.run()`` in a task; wait for ``until``; terminate and reap on exit."""
    task = asyncio.create_task(node.run())
    try:
        if until is not None:
            waiting = asyncio.create_task(
                node.state.wait_for(lambda s: s.status in (until, state.ComputeStatus.FAILED))
            )
            await asyncio.wait({waiting, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            assert node.state.status is until, f"{node.state.status}: {node.state.error}"
        yield task
    finally:
        if not task.done():
            node.request_stop("immediate")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def config(spec_json: dict[str, Any] | None) -> spec_mod.ComputeConfig:
    return spec_mod.ComputeConfig.model_validate({"spec": spec_json})
