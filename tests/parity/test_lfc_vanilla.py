"""The vanilla backend (beyond Neon): a compute saves the blocks in its ``shared_buffers``
(``pg_buffercache``) to the endpoint storage and a restarted one loads them back
(``pg_prewarm``). Restarting postgres empties ``shared_buffers``; with ``autoprewarm`` the
compute is warm when it reports ``running``: most of the table's offloaded blocks are in
``shared_buffers`` again, on the same PGDATA and on a copy of it (a fresh PGDATA), measured
with ``pg_buffercache``. Without a prewarm the same restart leaves them out."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

import pytest
import zstandard

from compute_ctl.compute import metrics, state
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.lfc import controller
from tests import pgserver
from tests.parity import lfcsupport
from tests.support import endpoint_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OBJECT = f"/{lfcsupport.TENANT}/{lfcsupport.TIMELINE}/{lfcsupport.ENDPOINT}/lfc_state"
THRESHOLD = 0.8
# About 2.5 MB: below a quarter of the spec's 16MB shared_buffers, so a sequential scan
# caches it (larger scans go through a small ring of buffers).
CREATE_TABLE = (
    "CREATE TABLE warm AS SELECT g AS id, pg_catalog.repeat('x', 200) AS pad"
    " FROM pg_catalog.generate_series(1, 10000) AS g"
)


async def _relation(dsn: str) -> tuple[int, int]:
    """The table's (database oid, relfilenode)."""
    found = await lfcsupport.rows(
        dsn,
        "SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),"
        " pg_relation_filenode('public.warm')",
    )
    return int(found[0][0]), int(found[0][1])


async def _cached(maintenance_dsn: str, relation: tuple[int, int]) -> set[int]:
    """The table's main-fork blocks in shared_buffers now."""
    found = await lfcsupport.rows(
        maintenance_dsn,
        "SELECT relblocknumber FROM public.pg_buffercache"
        " WHERE reldatabase = %s AND relfilenode = %s AND relforknumber = 0",
        list(relation),
    )
    return {int(r[0]) for r in found}


def _offloaded(storage: endpoint_storage.EndpointStorage, relfilenode: int) -> set[int]:
    """The table's main-fork blocks in the stored state."""
    document: dict[str, Any] = json.loads(
        zstandard.ZstdDecompressor().stream_reader(storage.objects[OBJECT]).read()
    )
    blocks: set[int] = set()
    for database in document["databases"]:
        for _, node, fork, runs in database["relations"]:
            if node == relfilenode and fork == 0:
                for first, last in runs:
                    blocks.update(range(first, last + 1))
    return blocks


def _fraction(cached: set[int], offloaded: set[int]) -> float:
    return len(cached & offloaded) / len(offloaded)


async def test_a_restarted_vanilla_compute_is_warm_when_running() -> None:
    base = pgserver.scratch_dir("lfc-vanilla-")
    port = pgserver.free_port()
    pgdata, copy = base / "pgdata", base / "copy"
    try:
        async with endpoint_storage.serving() as storage:
            raw = lfcsupport.spec(port=port, storage=storage)
            first = lfcsupport.make_node(pgdata, port=port, raw_spec=raw, keep_pgdata=True)
            async with lfcsupport.running(first) as api:
                appdb = first.connstr("appdb")
                await lfcsupport.rows(appdb, CREATE_TABLE)
                await lfcsupport.rows(appdb, "SELECT count(*) FROM public.warm")
                relation = await _relation(appdb)
                # A table cached and offloaded, then dropped: its blocks are skipped.
                await lfcsupport.rows(appdb, CREATE_TABLE.replace("warm", "gone", 1))
                await lfcsupport.rows(appdb, "SELECT count(*) FROM public.gone")
                assert await api.call("POST", "/lfc/offload") == (202, "")
                done = await api.wait_state("offload", ["completed", "failed", "skipped"])
                assert done["status"] == "completed", done
                before = await _cached(first.connstr(), relation)
                await lfcsupport.rows(appdb, "DROP TABLE public.gone")
            offloaded = _offloaded(storage, relation[1])
            assert len(offloaded) > 200, len(offloaded)  # the table was cached, ~300 blocks
            assert offloaded <= before
            cp = await asyncio.create_subprocess_exec("cp", "-a", str(pgdata), str(copy))
            assert await cp.wait() == 0

            # Same PGDATA, no prewarm: the restart emptied shared_buffers.
            second = lfcsupport.make_node(pgdata, port=port, raw_spec=raw, keep_pgdata=True)
            async with lfcsupport.running(second) as api:
                cold = _fraction(await _cached(second.connstr(), relation), offloaded)
                assert cold < 0.2, cold
                assert await api.call("POST", "/lfc/prewarm") == (202, "")
                done = await api.wait_state("prewarm", ["completed", "failed", "skipped"])
                assert done["status"] == "completed", done
                manual = _fraction(await _cached(second.connstr(), relation), offloaded)
                assert manual >= THRESHOLD, manual

            # A fresh PGDATA (a copy) with autoprewarm: warm when it reports running.
            raw_auto = {**raw, "autoprewarm": True}
            third = lfcsupport.make_node(copy, port=port, raw_spec=raw_auto, keep_pgdata=True)
            async with lfcsupport.running(third) as api:
                warm = _fraction(await _cached(third.connstr(), relation), offloaded)
                code, state = await api.call("GET", "/lfc/prewarm")
        print(
            f"offloaded {len(offloaded)} blocks of the table; fraction cached: cold {cold:.2f},"
            f" after POST /lfc/prewarm {manual:.2f}, autoprewarm at running {warm:.2f}; {state}"
        )
        assert code == 200
        assert state["status"] == "completed", state
        assert state["prewarmed"] >= len(offloaded) * THRESHOLD
        assert state["skipped"] >= 250, state  # the dropped table's ~300 blocks
        assert warm >= THRESHOLD, warm
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_new_replica_is_warm_when_running() -> None:
    """Two stateless replicas of one vanilla primary (each a fresh ``pg_basebackup``): the
    second, with ``autoprewarm``, holds what the first cached and offloaded. A standby
    cannot create extensions: they come from the primary (``docs/lfc.md``)."""
    base = pgserver.scratch_dir("lfc-replica-")
    port = pgserver.free_port()
    try:
        # A standby needs max_connections at least the primary's (the spec's 40).
        with pgserver.running(extra_conf="max_connections = 40") as primary:
            for statement in (
                "CREATE EXTENSION pg_buffercache",
                "CREATE EXTENSION pg_prewarm",
                CREATE_TABLE,
            ):
                await lfcsupport.rows(primary.dsn(), statement)
            async with endpoint_storage.serving() as storage:
                raw = lfcsupport.spec(port=port, storage=storage)
                raw.update(mode="Replica", primary_connstring=primary.dsn())
                raw["cluster"].update(roles=[], databases=[])
                first = lfcsupport.make_node(base / "first", port=port, raw_spec=raw)
                async with lfcsupport.running(first) as api:
                    await lfcsupport.rows(first.connstr(), "SELECT count(*) FROM public.warm")
                    relation = await _relation(first.connstr())
                    assert await api.call("POST", "/lfc/offload") == (202, "")
                    done = await api.wait_state("offload", ["completed", "failed", "skipped"])
                    assert done["status"] == "completed", done
                offloaded = _offloaded(storage, relation[1])
                assert len(offloaded) > 200, len(offloaded)

                raw_auto = {**raw, "autoprewarm": True}
                second = lfcsupport.make_node(base / "second", port=port, raw_spec=raw_auto)
                async with lfcsupport.running(second) as api:
                    warm = _fraction(await _cached(second.connstr(), relation), offloaded)
                    _, state = await api.call("GET", "/lfc/prewarm")
        print(f"replica: {len(offloaded)} blocks offloaded, at running {warm:.2f}; {state}")
        assert state["status"] == "completed", state
        assert warm >= THRESHOLD, warm
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_failed_autoprewarm_does_not_fail_the_start() -> None:
    base = pgserver.scratch_dir("lfc-autofail-")
    port = pgserver.free_port()
    try:
        async with endpoint_storage.serving() as storage:
            storage.fail_with = 500
            raw = lfcsupport.spec(port=port, storage=storage, autoprewarm=True)
            n = lfcsupport.make_node(base / "pgdata", port=port, raw_spec=raw)
            async with lfcsupport.running(n) as api:
                assert await api.call("GET", "/lfc/prewarm") == (
                    200,
                    {
                        "status": "failed",
                        "error": "500 Internal Server Error querying endpoint storage",
                    },
                )
                assert await api.metric("compute_ctl_lfc_prewarms_total") == 1
                assert await api.metric("compute_ctl_lfc_prewarm_errors_total") == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_autoprewarm_waits_at_most_its_bound(pg: pgserver.PgServer) -> None:
    """A vanilla prewarm that does not end in time (the storage holds its answer) lets the
    start go on after the bound, and carries on in the background."""
    async with endpoint_storage.serving() as storage:
        raw = lfcsupport.spec(port=pg.port, storage=storage)
        spec = spec_mod.ComputeSpec.model_validate(raw)
        lfc = controller.Lfc(
            spec=lambda: spec,
            connstr=pg.dsn,
            metrics=metrics.Metrics(build_tag="t", state=state.ComputeState()),
        )
        storage.hold = asyncio.Event()
        started = time.monotonic()
        await lfc.autoprewarm(wait=0.5)
        assert 0.5 <= time.monotonic() - started < 10
        assert lfc.prewarm_state.status == "prewarming"
        storage.hold.set()
        deadline = time.monotonic() + 30
        while lfc.prewarm_state.status == "prewarming":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert lfc.prewarm_state.status == "skipped"  # nothing was stored
        await lfc.close()
