"""``pgsession.KeptSession`` (as ``db.kept`` builds it): one backend from one use to the
next, reset to the session policy before each, never used again after a failed use, and
replaced once, transparently, when its backend is gone (terminated, postgres restarted)."""

from __future__ import annotations

import asyncio
import signal
import time

import psycopg
import pytest

from compute_ctl.compute import pgsession
from compute_ctl.compute.catalog import db
from tests import pgserver
from tests.catalog.conftest import execute


async def _backend(conn: pgsession.Connection) -> int:
    cur = await conn.execute("select pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _fails(session: pgsession.KeptSession, query: str) -> None:
    async with session.borrow() as conn:
        await conn.execute(query)


async def _failed_block(dsn: str, session: pgsession.KeptSession, pid: int) -> None:
    async with db.shared(dsn, session=session):
        async with db.connect(dsn) as conn:
            assert await _backend(conn) == pid
        raise RuntimeError("the reconfiguration failed")


async def _gone(dsn: str, pid: int) -> None:
    """Until ``pid`` is no longer a backend (a terminated one leaves asynchronously)."""
    deadline = time.monotonic() + 30
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute("select 1 from pg_stat_activity where pid = %s", [pid])
            if await cur.fetchone() is None:
                return
            await asyncio.sleep(0.01)
    raise TimeoutError(f"backend {pid} still there")


async def test_one_backend_across_uses_reset_before_each(pgc: pgserver.PgServer) -> None:
    execute(pgc.dsn(), "CREATE ROLE kept_plain NOSUPERUSER")
    session = db.kept(pgc.dsn())
    try:
        async with session.borrow() as conn:
            pid = await _backend(conn)
            # What a caller could leave behind: another role, settings of its own.
            await conn.execute("SET log_statement = 'all'")
            await conn.execute("SET ROLE kept_plain")
            await conn.execute("SET search_path = public")
            await conn.execute("SET statement_timeout = 1")
        assert session.backend_pid == pid
        async with session.borrow() as conn:
            assert await _backend(conn) == pid  # no new backend
            cur = await conn.execute(
                "select current_user, session_user, current_setting('search_path'), "
                "current_setting('statement_timeout'), current_setting('log_statement'), "
                "current_setting('application_name')"
            )
            assert await cur.fetchone() == (
                pgserver.SUPERUSER,
                pgserver.SUPERUSER,
                "",
                "0",
                "none",
                db.APPLICATION_NAME,
            )
            await conn.execute("SET SESSION AUTHORIZATION kept_plain")
        async with session.borrow() as conn:
            cur = await conn.execute("select current_user, session_user")
            assert await cur.fetchone() == (pgserver.SUPERUSER, pgserver.SUPERUSER)
    finally:
        await session.close()
    assert session.backend_pid is None


async def test_a_failed_use_or_an_open_transaction_is_not_reused(
    pgc: pgserver.PgServer,
) -> None:
    session = db.kept(pgc.dsn())
    try:
        async with session.borrow() as conn:
            first = await _backend(conn)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await _fails(session, "select 1/0")
        assert session.backend_pid is None  # closed with the failed use
        async with session.borrow() as conn:
            second = await _backend(conn)
            await conn.execute("BEGIN")
        assert second != first
        assert session.backend_pid is None  # a transaction left open: closed too
        async with session.borrow() as conn:
            assert await _backend(conn) != second
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        await session.close()


async def test_closed_during_a_use_closes_when_the_use_ends(pgc: pgserver.PgServer) -> None:
    session = db.kept(pgc.dsn())
    async with session.borrow() as conn:
        pid = await _backend(conn)
        await session.close()  # postgres stops, say, while a reconfiguration reads
        assert await _backend(conn) == pid  # the block keeps its session...
    assert session.backend_pid is None  # ...until it ends
    assert conn.closed


async def test_a_terminated_backend_is_replaced_transparently(pgc: pgserver.PgServer) -> None:
    session = db.kept(pgc.dsn())
    try:
        async with session.borrow() as conn:
            pid = await _backend(conn)
        execute(pgc.dsn(), f"select pg_terminate_backend({pid})")
        await _gone(pgc.dsn(), pid)
        async with session.borrow() as conn:
            assert await _backend(conn) != pid
    finally:
        await session.close()


async def test_a_restarted_postgres_is_reconnected() -> None:
    with pgserver.running() as server:
        session = db.kept(server.dsn())

        def restart(*, then: bool = True) -> None:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGINT)  # fast shutdown
            server.proc.wait(timeout=30)
            if then:
                server.start()

        try:
            async with session.borrow() as conn:
                first = await _backend(conn)
            restart()
            async with session.borrow() as conn:  # transparently
                second = await _backend(conn)
                cur = await conn.execute("select current_setting('log_statement')")
                assert await cur.fetchone() == ("none",)  # the policy, on the new session
            assert second != first
            restart(then=False)
            # Down: broken and not replaceable now; an error, not a hang.
            with pytest.raises(psycopg.OperationalError):
                async with session.borrow():
                    pass
            server.start()
            async with session.borrow() as conn:
                assert await _backend(conn) not in (first, second)
        finally:
            await session.close()


async def test_a_kept_session_outlives_shared_blocks(pgc: pgserver.PgServer) -> None:
    session = db.kept(pgc.dsn())
    try:
        async with db.shared(pgc.dsn(), session=session), db.connect(pgc.dsn()) as conn:
            pid = await _backend(conn)
        assert session.backend_pid == pid  # kept when the block ends
        with pytest.raises(RuntimeError):
            await _failed_block(pgc.dsn(), session, pid)
        assert session.backend_pid is None  # an error left the block: not used again
        async with db.shared(pgc.dsn(), session=session), db.connect(pgc.dsn()) as conn:
            assert await _backend(conn) != pid
    finally:
        await session.close()
