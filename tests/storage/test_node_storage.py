"""compute_ctl's node on storage: the Neon path against the test services, and a replica.

A real ``ComputeNode`` (in process) with ``-b`` pointing at the Neon stand-in bin
(real postgres, fake ``--sync-safekeepers``): it syncs, fetches the basebackup from the
test pageserver, starts real postgres on it, and ``POST /terminate`` returns the LSN of
the second sync. A node following a vanilla primary: rows written there appear on the
compute, and ``terminate`` returns the replayed LSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from compute_ctl.compute import errors, state
from compute_ctl.compute import node as node_mod
from compute_ctl.compute import params as params_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import server as http_server
from compute_ctl.compute.storage import safekeepers
from tests import pgserver
from tests.storage import archive, doubles, neonbin

TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"
TOKEN = "node-storage-token"
S = state.ComputeStatus


@pytest.fixture(autouse=True)
def generous_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safekeepers, "TIMELINE_STATUS_TIMEOUT", 5.0)


def spec_for(port: int, **fields: Any) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "skip_pg_catalog_updates": True,
            "cluster": {
                "roles": [],
                "databases": [],
                "settings": [
                    {"name": "port", "value": str(port), "vartype": "integer"},
                    {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
                    {"name": "fsync", "value": "off", "vartype": "bool"},
                    {"name": "shared_buffers", "value": "16MB", "vartype": "string"},
                ],
            },
            **fields,
        }
    )


def make_node(
    *, pgdata: Path, port: int, spec: spec_mod.ComputeSpec, pgbin: str = "postgres"
) -> node_mod.ComputeNode:
    params = params_mod.Params(
        pgdata=pgdata,
        connstr=f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{port}/postgres",
        compute_id="compute-storage-test",
        pgbin=pgbin,
        external_http_host="127.0.0.1",
        external_http_port=pgserver.free_port(),
        internal_http_port=pgserver.free_port(),
        failed_exit_delay=0.0,
        internal_full_api=True,
    )
    return node_mod.ComputeNode(params, config=spec_mod.ComputeConfig(spec=spec))


@contextlib.asynccontextmanager
async def running(node: node_mod.ComputeNode) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(node.run())
    try:
        waiting = asyncio.create_task(
            node.state.wait_for(lambda s: s.status in (S.RUNNING, S.FAILED, S.TERMINATED))
        )
        await asyncio.wait({waiting, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert node.state.status is S.RUNNING, f"{node.state.status}: {node.state.error}"
        yield task
    finally:
        if not task.done():
            node.request_stop("immediate")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def fetch_one(dsn: str, query: str) -> tuple[Any, ...]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)
        row = await cur.fetchone()
    assert row is not None
    return row


async def test_node_starts_from_neon_storage_and_terminate_returns_the_final_lsn(
    pgdata: Path, pgdata_archive: bytes, neon_bin: neonbin.NeonBin
) -> None:
    port = pgserver.free_port()
    neon_bin.configure(lsn="0/16B3748")
    async with doubles.storage_services(
        pgdata_archive, token=TOKEN, sk_kwargs={"knows_timeline": False}
    ) as (ps, sks):
        spec = spec_for(
            port,
            tenant_id=TENANT,
            timeline_id=TIMELINE,
            pageserver_connstring=ps.url,
            safekeeper_connstrings=[sk.address for sk in sks],
            storage_auth_token=TOKEN,
        )
        node = make_node(pgdata=pgdata, port=port, spec=spec, pgbin=str(neon_bin.postgres))
        async with running(node) as task:
            assert ps.calls[0].lsn == "0/16B3748"
            row = await fetch_one(node.connstr(), "select note from basebackup_marker")
            assert row == (archive.MARKER,)
            conf = (pgdata / "postgresql.conf").read_text()
            assert f"neon.pageserver_connstring='{ps.url}'" in conf
            assert "neon.compute_mode=primary" in conf
            timings = node.state.timings
            assert timings.basebackup_bytes == len(pgdata_archive)
            assert timings.sync_safekeepers_ms > 0
            neon_bin.configure(lsn="0/1A2B3C4")
            # /terminate (internal port): postgres stops, the safekeepers sync again.
            async with http_server.serving(node), aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{node.params.internal_http_port}/terminate?mode=fast"
                async with http.post(url) as response:
                    assert response.status == 200
                    assert await response.json() == {"lsn": "0/1A2B3C4"}
            await asyncio.wait_for(task, 30)
    calls = neon_bin.calls()
    assert [c["token"] for c in calls] == [TOKEN, TOKEN]
    assert all(c["pgdata"] == str(pgdata) for c in calls)


async def test_node_follows_a_vanilla_primary(pg: pgserver.PgServer, pgdata: Path) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("create table notes (note text)")
        await conn.execute("insert into notes values ('cloned')")
    port = pgserver.free_port()
    spec = spec_for(port, mode="Replica", primary_connstring=pg.dsn())
    node = make_node(pgdata=pgdata, port=port, spec=spec)
    async with running(node) as task:
        assert await fetch_one(node.connstr(), "select pg_is_in_recovery()") == (True,)
        # The clone's pg_hba.conf (the primary's, with its replication lines) was replaced.
        hba = await asyncio.to_thread((pgdata / "pg_hba.conf").read_text)
        assert "replication" not in hba
        assert "host all all all md5" in " ".join(hba.split())
        async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
            await conn.execute("insert into notes values ('streamed')")
            (written,) = await fetch_one(pg.dsn(), "select pg_current_wal_lsn()::text")
        deadline = time.monotonic() + 30
        while await fetch_one(node.connstr(), "select count(*) from notes") != (2,):
            assert time.monotonic() < deadline, "the compute never saw the new row"
            await asyncio.sleep(0.05)  # polling a condition, with a deadline
        already, lsn = await node.terminate("fast")
        assert not already
        assert lsn is not None
        assert spec_mod.lsn_to_int(lsn) >= spec_mod.lsn_to_int(written)
        await asyncio.wait_for(task, 30)


async def test_node_rejects_a_primary_without_safekeepers(pgdata: Path) -> None:
    port = pgserver.free_port()
    spec = spec_for(
        port, tenant_id=TENANT, timeline_id=TIMELINE, pageserver_connstring="postgresql://ps"
    )
    node = make_node(pgdata=pgdata, port=port, spec=spec)
    with pytest.raises(errors.ConfigError, match="safekeeper"):
        await node.run()
    assert not await asyncio.to_thread(pgdata.exists)  # nothing was touched
