"""The catalog endpoints under abuse (issue 12, items 14, 15, 20, 21), on a PostgreSQL with
few connection slots: floods of ``/readyz`` and ``/database_schema`` leave room for the
application, ``/grants`` refuses system schemas, ``/insights`` never shows a password."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from psycopg import sql

from compute_ctl.compute.catalog import ondemand
from tests import pgserver
from tests.http.conftest import Api, serve_double
from tests.support import nodedouble

pytestmark = pytest.mark.postgres

APP_ROLE = "app_user"
APP_PASSWORD = "app-pw"
# Few slots: 30 concurrent pg_dumps (or 150 readiness sessions) would take them all.
SMALL = "max_connections = 20\nsuperuser_reserved_connections = 3\n"


@pytest.fixture(scope="module")
def small_pg() -> Iterator[pgserver.PgServer]:
    with pgserver.running(extra_conf=SMALL) as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                )
            )
            conn.execute("CREATE TABLE public.locked_up (id int)")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
        yield server


@pytest.fixture
async def small_api(small_pg: pgserver.PgServer) -> AsyncIterator[Api]:
    async with serve_double(small_pg) as served:
        await served.node.start_running()
        yield served


def _app_dsn(pg: pgserver.PgServer) -> str:
    return (
        f"host=127.0.0.1 port={pg.port} dbname=postgres user={APP_ROLE} "
        f"password={APP_PASSWORD} connect_timeout=5"
    )


async def _app_logins(pg: pgserver.PgServer, count: int) -> list[str]:
    """``count`` application logins, each held a moment; the failures' messages."""

    async def one() -> str | None:
        try:
            async with await psycopg.AsyncConnection.connect(_app_dsn(pg)) as conn:
                await conn.execute("SELECT pg_catalog.pg_sleep(0.05)")
        except psycopg.OperationalError as e:
            return str(e)
        return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [r for r in results if r is not None]


async def test_a_readyz_flood_costs_one_backend(
    small_api: Api, small_pg: pgserver.PgServer
) -> None:
    async def probe(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{small_api.external}/readyz") as r:
            return r.status

    # Tokenless, as the kubelet: 100 concurrent probes over their own connections (under
    # the server's connection cap, so every one is served).
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as flood:
        probes = [asyncio.create_task(probe(flood)) for _ in range(100)]
        failures = await _app_logins(small_pg, 8)
        codes = await asyncio.gather(*probes)
    assert failures == []
    assert set(codes) == {200}
    with psycopg.connect(small_pg.dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'compute_ctl:readyz'"
        ).fetchone()
    assert row == (1,)  # one kept session, whatever the request rate


def _pg_dump_children() -> list[int]:
    """pg_dump processes this test process spawned (through the double's tools)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if comm == "pg_dump" and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


async def _until(predicate: object, *, seconds: float = 30.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_database_schema_flood_on_a_locked_table(
    small_api: Api, small_pg: pgserver.PgServer
) -> None:
    holder = await psycopg.AsyncConnection.connect(small_pg.dsn())
    await holder.execute("LOCK TABLE public.locked_up IN ACCESS EXCLUSIVE MODE")
    try:

        async def impatient() -> None:
            timeout = aiohttp.ClientTimeout(total=1.0)
            url = f"{small_api.external}/database_schema"
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as s,
                    s.get(url, params={"database": "postgres"}) as r,
                ):
                    await r.read()
            except TimeoutError:
                pass  # the client gives up and leaves

        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(_pg_dump_children()))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(impatient() for _ in range(30)))
        failures = await _app_logins(small_pg, 8)
        await _until(lambda: not _pg_dump_children())
        watcher.cancel()
        assert failures == []
        assert 1 <= peak <= 2  # the slots bound the dumps, whatever the flood
    finally:
        await holder.close()
    # Nothing left behind: the dump and a spec still work.
    async with small_api.session.get(
        f"{small_api.external}/database_schema", params={"database": "postgres"}
    ) as r:
        assert r.status == 200
        assert "locked_up" in await r.text()
    spec = nodedouble.minimal_spec()
    async with small_api.session.post(f"{small_api.external}/configure", json={"spec": spec}) as r:
        assert r.status == 200, await r.text()


async def test_a_dump_blocked_by_a_lock_gives_up(
    small_api: Api, small_pg: pgserver.PgServer
) -> None:
    holder = await psycopg.AsyncConnection.connect(small_pg.dsn())
    await holder.execute("LOCK TABLE public.locked_up IN ACCESS EXCLUSIVE MODE")
    try:
        async with small_api.session.get(
            f"{small_api.external}/database_schema", params={"database": "postgres"}
        ) as r:
            assert r.status == 503, await r.text()
            assert "lock" in (await r.json())["error"]
    finally:
        await holder.close()
    assert not _pg_dump_children()


@pytest.mark.parametrize(
    "schema", ["pg_catalog", "information_schema", "pg_toast", "neon", "neon_migration"]
)
async def test_grants_refuse_system_schemas(
    small_api: Api, small_pg: pgserver.PgServer, schema: str
) -> None:
    body = {"database": "postgres", "schema": schema, "privileges": ["CREATE"], "role": APP_ROLE}
    async with small_api.session.post(f"{small_api.internal}/grants", json=body) as r:
        assert r.status == 400, await r.text()
        assert schema in (await r.json())["error"]
    with psycopg.connect(small_pg.dsn()) as conn:
        row = conn.execute(
            "SELECT has_schema_privilege(%s, 'pg_catalog', 'CREATE')", (APP_ROLE,)
        ).fetchone()
    assert row == (False,)


async def test_insights_redact_passwords_of_users_own_statements(
    small_api: Api, small_pg: pgserver.PgServer
) -> None:
    with psycopg.connect(_app_dsn(small_pg), autocommit=True) as conn:
        conn.execute("CREATE ROLE insight_a PASSWORD 'hunter2-quoted'")
        conn.execute("CREATE ROLE insight_b WITH LOGIN ENCRYPTED PASSWORD $pw$hunter2-dollar$pw$")
        conn.execute("ALTER ROLE insight_a PASSWORD E'hunter2-\\'escaped'")
    async with small_api.session.get(f"{small_api.external}/insights") as r:
        assert r.status == 200
        text = await r.text()
    inner = json.loads(json.loads(text))
    queries = [row["query"] for row in inner["pg_stat_statements"]]
    assert any("insight_a" in q for q in queries)  # the statements are there...
    assert "hunter2" not in text  # ...without their passwords
    assert any(ondemand.REDACTED in q for q in queries)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("CREATE ROLE r PASSWORD 'a''b' LOGIN", "CREATE ROLE r PASSWORD '<redacted>' LOGIN"),
        ("alter user r with password $$x$$", "alter user r with password '<redacted>'"),
        ("ALTER ROLE r PASSWORD E'a\\'b'", "ALTER ROLE r PASSWORD '<redacted>'"),
        ("ALTER ROLE r PASSWORD NULL", "ALTER ROLE r PASSWORD NULL"),
        ("ALTER ROLE r PASSWORD 'unterminated", "ALTER ROLE r PASSWORD '<redacted>'"),
        ("SELECT 1", "SELECT 1"),
        (
            "CREATE ROLE a PASSWORD 'x'; CREATE ROLE b PASSWORD 'y'",
            "CREATE ROLE a PASSWORD '<redacted>'; CREATE ROLE b PASSWORD '<redacted>'",
        ),
    ],
)
def test_redact_passwords(query: str, expected: str) -> None:
    assert ondemand.redact_passwords(query) == expected
