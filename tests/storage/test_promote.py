"""``POST /promote`` on real computes: a vanilla replica, a replica on Neon storage.

The vanilla replica's old primary carries Neon's trap in its ``postgresql.auto.conf``
(``synchronous_standby_names = 'walproposer'``, set without a reload so the primary
itself still commits); the clone inherits it. After ``/promote`` the compute takes a
write and commits it within a bound, where Neon's steps would make every commit wait
forever. Concurrent calls share one promotion, a later one gets the same answer, and
wrong states get Neon's codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from compute_ctl.compute import errors, pgsession
from compute_ctl.compute import node as node_mod
from compute_ctl.compute import promote as promote_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import server as http_server
from tests import pgserver
from tests.storage import doubles, neonbin
from tests.storage import test_node_storage as node_storage

TENANT = node_storage.TENANT
TIMELINE = node_storage.TIMELINE
TOKEN = node_storage.TOKEN


@contextlib.asynccontextmanager
async def api(node: node_mod.ComputeNode) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The node's whole API on its internal port (``--internal-full-api``, no JWT)."""
    async with http_server.serving(node), aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{node.params.internal_http_port}"


async def post_promote(
    http: aiohttp.ClientSession, base: str, body: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base}/promote", json=body) as response:
        return response.status, await response.json()


async def until_prewarm_settles(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        async with http.get(f"{base}/lfc/prewarm") as response:
            if (await response.json())["status"] != "prewarming":
                return
        assert time.monotonic() < deadline, "the prewarm never ended"
        await asyncio.sleep(0.05)  # polling a condition, with a deadline


def promote_body(spec: spec_mod.ComputeSpec, lsn: str) -> dict[str, Any]:
    return {"spec": spec.model_dump(mode="json"), "wal_flush_lsn": lsn}


async def test_a_vanilla_replica_promoted_through_the_api_commits_writes(
    pg: pgserver.PgServer, pgdata: Path
) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("create table notes (note text)")
        await conn.execute("insert into notes values ('cloned')")
        # Neon's setting, inherited by the clone through postgresql.auto.conf.
        await conn.execute("alter system set synchronous_standby_names = 'walproposer'")
    port = pgserver.free_port()
    spec = node_storage.spec_for(port, mode="Replica", primary_connstring=pg.dsn())
    node = node_storage.make_node(pgdata=pgdata, port=port, spec=spec)
    async with node_storage.running(node), api(node) as (http, base):
        async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
            await conn.execute("insert into notes values ('last on the old primary')")
        (flushed,) = await node_storage.fetch_one(
            pg.dsn(), "select pg_current_wal_flush_lsn()::text"
        )
        await asyncio.to_thread(pg.stop)

        new = node_storage.spec_for(port, skip_pg_catalog_updates=False)
        new_json = new.model_dump(mode="json")
        new_json["cluster"]["roles"] = [{"name": "app", "encrypted_password": None}]
        body = {"spec": new_json, "wal_flush_lsn": flushed}
        first, second = await asyncio.gather(
            post_promote(http, base, body), post_promote(http, base, body)
        )
        assert first[0] == 200, first
        assert first == second  # one promotion: the same timings for both callers
        answer = first[1]
        assert answer["status"] == "completed"
        assert set(answer) == {
            "status",
            "lsn_wait_time_ms",
            "pg_promote_time_ms",
            "reconfigure_time_ms",
        }

        async with await psycopg.AsyncConnection.connect(node.connstr()) as conn:
            await conn.execute("insert into notes values ('first on the new primary')")
            await asyncio.wait_for(conn.commit(), 10)  # Neon's setting would block here
            cur = await conn.execute("select note from notes order by note")
            notes = [row[0] for row in await cur.fetchall()]
        assert notes == ["cloned", "first on the new primary", "last on the old primary"]
        assert await node_storage.fetch_one(node.connstr(), "select pg_is_in_recovery()") == (
            False,
        )
        assert await node_storage.fetch_one(node.connstr(), "show synchronous_standby_names") == (
            "",
        )
        auto = await asyncio.to_thread((pgdata / "postgresql.auto.conf").read_text)
        assert "synchronous_standby_names" not in auto
        # The reconfiguration applied the new spec's catalog on the promoted server.
        assert await node_storage.fetch_one(
            node.connstr(), "select count(*) from pg_roles where rolname = 'app'"
        ) == (1,)
        async with http.get(f"{base}/status") as response:
            status = await response.json()
        assert (status["status"], status["mode"]) == ("running", "primary")

        # Completed is for good: a later call, whatever its body, gets the same answer.
        assert await post_promote(http, base, promote_body(new, "0/0")) == first
        # Bodies are still checked first.
        bad = await post_promote(http, base, {"spec": new_json, "wal_flush_lsn": "nope"})
        assert bad[0] == 400
        replica = await post_promote(http, base, promote_body(spec, flushed))
        assert replica[0] == 400
        assert "primary" in replica[1]["error"]


async def test_a_replica_on_neon_storage_is_promoted_with_neons_settings(
    pgdata: Path, pgdata_archive: bytes, neon_bin: neonbin.NeonBin
) -> None:
    """On Neon storage the walproposer acknowledges commits, so Neon's settings are kept;
    Neon's prewarm precondition holds (a refused call does not stick: the next one
    promotes); once promoted, the compute stops as a primary: the safekeepers are synced."""
    port = pgserver.free_port()
    neon_bin.configure(lsn="0/1A2B3C4")
    async with doubles.storage_services(
        pgdata_archive, token=TOKEN, safekeepers=2, sk_kwargs={"knows_timeline": False}
    ) as (ps, sks):
        storage = {
            "tenant_id": TENANT,
            "timeline_id": TIMELINE,
            "pageserver_connstring": ps.url,
            "safekeeper_connstrings": [sk.address for sk in sks],
            "storage_auth_token": TOKEN,
        }
        spec = node_storage.spec_for(port, mode="Replica", **storage)
        node = node_storage.make_node(
            pgdata=pgdata, port=port, spec=spec, pgbin=str(neon_bin.postgres)
        )
        async with node_storage.running(node) as task, api(node) as (http, base):
            assert ps.calls[0].replica
            new = node_storage.spec_for(port, **storage)
            # Neon: the LFC must be prewarmed first (a failed prewarm is enough).
            refused = await post_promote(http, base, promote_body(new, "0/1"))
            assert refused == (500, {"status": "failed", "error": "compute NotPrewarmed"})
            async with http.post(f"{base}/lfc/prewarm") as response:
                assert response.status == 202
            await until_prewarm_settles(http, base)
            code, answer = await post_promote(http, base, promote_body(new, "0/1"))
            assert code == 200, answer
            auto = await asyncio.to_thread((pgdata / "postgresql.auto.conf").read_text)
            safekeepers = ",".join(sk.address for sk in sks)
            assert f"neon.safekeepers = '{safekeepers}'" in auto
            assert "synchronous_standby_names = 'walproposer'" in auto
            conf = await asyncio.to_thread((pgdata / "postgresql.conf").read_text)
            assert "neon.compute_mode=primary" in conf
            row = await node_storage.fetch_one(node.connstr(), "select pg_is_in_recovery()")
            assert row == (False,)
            assert neon_bin.calls() == []  # a replica start does not sync
            already, lsn = await node.terminate("fast")
            assert (already, lsn) == (False, "0/1A2B3C4")
            await asyncio.wait_for(task, 30)
    assert len(neon_bin.calls()) == 1


async def test_a_static_compute_is_not_promoted_and_the_lsn_must_be_reached(
    pgdata: Path, pgdata_archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(promote_mod, "CATCH_UP_S", 0.05)  # Neon's 20 s, shortened
    port = pgserver.free_port()
    async with doubles.TestPageserver(token=TOKEN, archive=pgdata_archive) as ps:
        storage = {
            "tenant_id": TENANT,
            "timeline_id": TIMELINE,
            "pageserver_connstring": ps.url,
            "storage_auth_token": TOKEN,
        }
        spec = node_storage.spec_for(port, mode={"Static": "FF/0"}, **storage)
        node = node_storage.make_node(pgdata=pgdata, port=port, spec=spec)
        new = node_storage.spec_for(port, safekeeper_connstrings=["127.0.0.1:1"], **storage)
        async with node_storage.running(node), api(node) as (http, base):
            code, answer = await post_promote(http, base, promote_body(new, "0/1"))
            assert (code, answer) == (
                500,
                {"status": "failed", "error": 'compute mode "static" is not replica'},
            )
            # Catching up is bounded: a flush LSN the server never reaches fails (Neon's
            # 21 polls, shortened here).
            async with pgsession.connect(node.connstr(), application_name="test") as conn:
                with pytest.raises(errors.ComputeError, match="didn't catch up with primary"):
                    await promote_mod.catch_up(conn, wal_flush_lsn="FFFF/0")


async def test_a_compute_that_is_not_running_answers_412(pgdata: Path) -> None:
    port = pgserver.free_port()
    spec = node_storage.spec_for(port)
    node = node_storage.make_node(pgdata=pgdata, port=port, spec=spec)
    async with api(node) as (http, base):  # never started: status empty
        code, answer = await post_promote(http, base, promote_body(spec, "0/1"))
    assert (code, answer) == (412, {"error": "invalid compute status: empty"})


async def test_one_flight_for_all_callers_and_a_retry_after_a_failure() -> None:
    tasks: list[asyncio.Task[promote_mod.Outcome]] = []

    def spawn(work: Coroutine[Any, Any, promote_mod.Outcome]) -> asyncio.Task[promote_mod.Outcome]:
        tasks.append(asyncio.create_task(work))
        return tasks[-1]

    began, release = asyncio.Event(), asyncio.Event()
    outcomes = [promote_mod.Outcome.failed("didn't catch up"), promote_mod.Outcome("completed")]

    async def start() -> promote_mod.Outcome:
        began.set()
        await release.wait()
        return outcomes.pop(0)

    promotion = promote_mod.Promotion(spawn=spawn)
    callers = [asyncio.create_task(promotion.join(start)) for _ in range(4)]
    await began.wait()  # the flight runs after the callers have joined it
    assert promotion.started
    callers[0].cancel()  # a client that goes away does not stop the promotion
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    release.set()
    failed = await asyncio.gather(*callers[1:])
    assert {o.status for o in failed} == {"failed"}
    assert len(tasks) == 1  # one flight for all the callers
    assert not promotion.started  # a failure is not kept: the next call tries again
    assert (await promotion.join(start)).status == "completed"
    assert (await promotion.join(start)).status == "completed"  # kept for good
    assert len(tasks) == 2
