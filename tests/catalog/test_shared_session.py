"""``db.shared``: one maintenance session for a reconfiguration's reads, and no more."""

from __future__ import annotations

import asyncio

from compute_ctl.compute import pgsession
from compute_ctl.compute.catalog import db
from tests import pgserver


async def _backend(conn: pgsession.Connection) -> int:
    cur = await conn.execute("select pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_one_session_inside_the_block(catalog_server: pgserver.PgServer) -> None:
    dsn = catalog_server.dsn()
    async with db.connect(dsn) as a, db.connect(dsn) as b:
        assert await _backend(a) != await _backend(b)  # outside: a session each
    async with db.shared(dsn):
        async with db.connect(dsn) as first:
            pid = await _backend(first)
        assert db.current(dsn) is first
        async with db.connect(dsn) as again:
            assert await _backend(again) == pid  # still open: the block's session
        async with db.connect(dsn, dbname="template1") as other:
            assert await _backend(other) != pid  # another database: its own session
        with db.unshared():
            assert db.current(dsn) is None
            async with db.connect(dsn) as own:
                assert await _backend(own) != pid
    assert first.closed  # closed with the block
    assert db.current(dsn) is None


async def test_a_task_that_outlives_the_block_opens_its_own(
    catalog_server: pgserver.PgServer,
) -> None:
    dsn = catalog_server.dsn()
    block_done = asyncio.Event()
    later: list[bool] = []

    async def background() -> None:
        await block_done.wait()
        async with db.connect(dsn) as conn:
            later.append(conn.closed)
        later.append(conn.closed)

    async with db.shared(dsn):
        async with db.connect(dsn) as shared_conn:
            await _backend(shared_conn)
        task = asyncio.create_task(background())  # inherits the block's context
    block_done.set()
    await asyncio.wait_for(task, 30)
    assert later == [False, True]  # a session of its own, opened and closed by it
