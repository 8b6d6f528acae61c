"""LSN leases of a Static compute against test pageservers on loopback (real libpq).

The lease task (``storage.leases.LeaseKeeper``) runs over a real ``ComputeState``; the
pageservers are ``doubles.TestPageserver``s answering ``lease lsn`` from a script. Short
expiries make renewals happen within a second; every wait is a polled condition with a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.storage import leases
from tests import pgserver
from tests.storage import doubles
from tests.storage import test_node_storage as node_storage

TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"
TOKEN = "lease-token"
LSN = "0/169AD58"


def static_spec(**fields: Any) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [], "databases": []},
            "mode": {"Static": LSN},
            "tenant_id": TENANT,
            "timeline_id": TIMELINE,
            "storage_auth_token": TOKEN,
            **fields,
        }
    )


def sharded(*shards: list[doubles.TestPageserver]) -> dict[str, Any]:
    count = len(shards)
    return {
        "pageserver_connection_info": {
            "shard_count": count,
            "shards": {
                f"{n:02x}{count:02x}": {"pageservers": [{"libpq_url": ps.url} for ps in pss]}
                for n, pss in enumerate(shards)
            },
        }
    }


async def until(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)  # polling a condition, with a deadline


@contextlib.asynccontextmanager
async def servers(n: int, **kwargs: Any) -> AsyncIterator[list[doubles.TestPageserver]]:
    async with contextlib.AsyncExitStack() as stack:
        made = [doubles.TestPageserver(token=TOKEN, **kwargs) for _ in range(n)]
        for ps in made:
            await stack.enter_async_context(ps)
        yield made


@contextlib.asynccontextmanager
async def keeping(spec: spec_mod.ComputeSpec) -> AsyncIterator[leases.LeaseKeeper]:
    state = state_mod.ComputeState()
    async with state.lock() as s:
        s.set_desired(spec)
    keeper = leases.LeaseKeeper(state=state, lsn=LSN)
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_renewal_and_backoff_timing() -> None:
    assert leases.renew_after(600.0) == 540.0  # Neon's 10-minute lease: every 9 minutes
    assert leases.renew_after(100.0) == 50.0  # short leases: half-way
    assert leases.renew_after(-5.0) == 0.0
    delays = [leases.retry_delay(n) for n in range(1, 14)]
    assert delays[:3] == [0.5, 0.75, 1.125]
    assert delays[-1] == 60.0
    assert max(delays) == 60.0


async def test_every_pageserver_of_every_shard_is_leased_with_neons_command() -> None:
    async with servers(3) as (a, b, c):
        spec = static_spec(**sharded([a], [b, c]))
        async with keeping(spec) as keeper:
            await until(lambda: keeper.rounds >= 1)
    assert [call.query for call in a.lease_calls] == [f"lease lsn {TENANT}-0002 {TIMELINE} {LSN} "]
    for ps in (b, c):
        assert [call.tenant_shard_id for call in ps.lease_calls] == [f"{TENANT}-0102"]
    assert all(ps.auth_failures == 0 for ps in (a, b, c))  # the storage token is the password


async def test_an_unsharded_tenant_is_leased_by_its_bare_id() -> None:
    async with servers(1) as (ps,), keeping(static_spec(pageserver_connstring=ps.url)) as keeper:
        await until(lambda: keeper.rounds >= 1)
    assert ps.lease_calls[0].query == f"lease lsn {TENANT} {TIMELINE} {LSN} "
    assert keeper.valid_until is not None
    assert 590 < keeper.valid_until - time.time() <= 600


async def test_renewal_follows_the_earliest_expiry_over_the_shards() -> None:
    """One shard's lease lasts 1 s, the other's 1000 s: renewal comes after 0.5 s."""
    async with (
        servers(1, lease_default=doubles.Lease(valid_for=1.0)) as (short,),
        servers(1, lease_default=doubles.Lease(valid_for=1000.0)) as (long,),
        keeping(static_spec(**sharded([short], [long]))) as keeper,
    ):
        await until(lambda: len(long.lease_calls) >= 3)
        assert keeper.valid_until is not None
        assert keeper.valid_until - time.time() < 2.0  # the minimum, not 1000 s
    first, second, third = (call.at for call in long.lease_calls[:3])
    for gap in (second - first, third - second):
        assert gap >= 0.4, "renewed before half the shortest lease had passed"


async def test_errors_are_retried_with_growing_waits() -> None:
    failing = [doubles.Lease(error="tenant is still loading")] * 3
    async with (
        servers(1, leases=failing) as (ps,),
        keeping(static_spec(pageserver_connstring=ps.url)) as keeper,
    ):
        await until(lambda: keeper.rounds >= 1)
        assert keeper.failures == 0
        assert keeper.last_error is None
    times = [call.at for call in ps.lease_calls[:4]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [0.5, 0.75, 1.125], strict=True):
        assert gap >= expected * 0.9, gaps  # lower bounds only: a loaded machine adds time


async def test_a_pageserver_change_wakes_the_renewal_early() -> None:
    """A 10-minute lease sleeps 9 minutes; a /configure moving the tenant wakes it."""
    async with (
        servers(2) as (old, new),
        keeping(static_spec(pageserver_connstring=old.url)) as keeper,
    ):
        await until(lambda: keeper.rounds >= 1)
        async with keeper.state.lock() as s:
            s.set_desired(static_spec(pageserver_connstring=new.url))
        await until(lambda: keeper.rounds >= 2, timeout=10)
    assert len(old.lease_calls) == 1
    assert [call.tenant_shard_id for call in new.lease_calls] == [TENANT]


async def test_a_pageserver_change_also_cuts_a_backoff_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leases, "RETRY_FIRST_S", 300.0)  # the first retry would be 5 min away
    async with (
        servers(1, lease_default=doubles.Lease(error="down")) as (broken,),
        servers(1) as (working,),
        keeping(static_spec(pageserver_connstring=broken.url)) as keeper,
    ):
        await until(lambda: keeper.failures >= 1)
        async with keeper.state.lock() as s:
            s.set_desired(static_spec(pageserver_connstring=working.url))
        await until(lambda: keeper.rounds >= 1, timeout=10)
        assert keeper.failures == 0


@pytest.mark.parametrize("refusing_shard", [0, 1])
async def test_a_refused_lease_stops_the_task_for_good(refusing_shard: int) -> None:
    refused = doubles.Lease(valid_for=None)  # valid_until NULL: below the GC cutoff
    async with servers(2) as pss:
        pss[refusing_shard].lease_default = refused
        state = state_mod.ComputeState()
        async with state.lock() as s:
            s.set_desired(static_spec(**sharded([pss[0]], [pss[1]])))
        keeper = leases.LeaseKeeper(state=state, lsn=LSN)
        await asyncio.wait_for(keeper.run(), 10)  # returns: it does not retry
    assert keeper.refused
    assert keeper.last_error is not None
    assert "GC cutoff" in keeper.last_error
    assert [len(ps.lease_calls) for ps in pss] == [1, 1]


async def test_a_pageserver_that_never_answers_is_an_error_not_a_hang() -> None:
    async def silent(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        request = leases.lease_request(
            static_spec(pageserver_connstring=f"postgresql://no_user@127.0.0.1:{port}"), lsn=LSN
        )
        with pytest.raises(TimeoutError):
            await leases.acquire(request, timeout=0.5)
    finally:
        server.close()


def test_only_static_computes_on_neon_storage_want_a_lease() -> None:
    assert leases.wants_lease(static_spec(pageserver_connstring="postgresql://ps"))
    assert not leases.wants_lease(static_spec())
    assert not leases.wants_lease(
        static_spec(pageserver_connstring="postgresql://ps", mode="Replica")
    )


def static_node_spec(port: int, ps: doubles.TestPageserver) -> spec_mod.ComputeSpec:
    """A Static compute at an LSN past the archive's end: a hot standby waiting for WAL."""
    return node_storage.spec_for(
        port,
        tenant_id=TENANT,
        timeline_id=TIMELINE,
        pageserver_connstring=ps.url,
        storage_auth_token=TOKEN,
        mode={"Static": "FF/0"},
    )


async def test_a_static_compute_leases_its_lsn_while_it_runs(
    pgdata: Path, pgdata_archive: bytes
) -> None:
    """The node starts the task for a Static spec; /configure with a new pageserver
    moves the lease there."""
    port = pgserver.free_port()
    async with servers(2, archive=pgdata_archive) as (ps, moved):
        spec = static_node_spec(port, ps)
        node = node_storage.make_node(pgdata=pgdata, port=port, spec=spec)
        async with node_storage.running(node):
            assert node.lease is not None
            await until(lambda: node.lease is not None and node.lease.rounds >= 1)
            assert ps.lease_calls[0].query == f"lease lsn {TENANT} {TIMELINE} FF/0 "
            assert ps.calls[0].lsn == "FF/0"
            moved_spec = spec.model_copy(update={"pageserver_connstring": moved.url})
            await node.configure(spec_mod.ComputeConfig(spec=moved_spec))
            await until(lambda: len(moved.lease_calls) >= 1, timeout=10)


async def test_a_refused_lease_leaves_the_static_compute_running(
    pgdata: Path, pgdata_archive: bytes
) -> None:
    port = pgserver.free_port()
    refusing = {"lease_default": doubles.Lease(valid_for=None)}
    async with servers(1, archive=pgdata_archive, **refusing) as (ps,):
        spec = static_node_spec(port, ps)
        node = node_storage.make_node(pgdata=pgdata, port=port, spec=spec)
        async with node_storage.running(node):
            await until(lambda: node.lease is not None and node.lease.refused)
            assert node.state.status is state_mod.ComputeStatus.RUNNING
            row = await node_storage.fetch_one(node.connstr(), "select pg_is_in_recovery()")
            assert row == (True,)
            assert len(ps.lease_calls) == 1
