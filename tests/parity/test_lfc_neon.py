"""``/lfc/prewarm`` and ``/lfc/offload`` with the Neon backend: stand-ins of the ``neon``
extension's functions (same names and signatures) in the maintenance database, an
endpoint storage on loopback checking the JWT. Every state JSON, 202/429/400, the
objects stored and read, skipped on 404 and on NULL, cancellation (in the storage
request and inside the SQL function), the metrics, and the periodic-offload gating."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import zstandard

from compute_ctl.compute import node as node_mod
from tests import pgserver
from tests.core import helpers
from tests.parity import lfcsupport
from tests.support import endpoint_storage

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]

STATE = b"\x00neon-lfc-state\xff" * 100
OBJECT = f"/{lfcsupport.TENANT}/{lfcsupport.TIMELINE}/{lfcsupport.ENDPOINT}/lfc_state"
STAND_INS = """
CREATE SCHEMA IF NOT EXISTS neon;
CREATE TABLE neon.test_lfc (id int PRIMARY KEY, state bytea, received bytea,
                            sleep float8 NOT NULL DEFAULT 0);
INSERT INTO neon.test_lfc (id, state) VALUES (1, %s);
CREATE FUNCTION neon.get_local_cache_state(max_chunks int DEFAULT NULL) RETURNS bytea
  LANGUAGE sql AS $$ SELECT state FROM neon.test_lfc WHERE id = 1 $$;
CREATE FUNCTION neon.prewarm_local_cache(state bytea, n_workers int DEFAULT 1) RETURNS void
  LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_catalog.pg_sleep((SELECT sleep FROM neon.test_lfc WHERE id = 1));
  UPDATE neon.test_lfc SET received = $1 WHERE id = 1;
END $$;
CREATE FUNCTION neon.get_prewarm_info(OUT total_pages int, OUT prewarmed_pages int,
                                      OUT skipped_pages int, OUT active_workers int)
  LANGUAGE sql AS $$ SELECT 10, 7, 3, 0 $$;
"""


class Compute:
    def __init__(
        self, api: lfcsupport.Api, storage: endpoint_storage.EndpointStorage, *, port: int
    ) -> None:
        self.api = api
        self.port = port
        self.storage = storage
        self.dsn = api.node.connstr()

    async def set_stand_in(self, column: str, value: object) -> None:
        assert column in ("state", "received", "sleep")
        await lfcsupport.rows(self.dsn, f"UPDATE neon.test_lfc SET {column} = %s", [value])

    async def received(self) -> bytes | None:
        found = await lfcsupport.rows(self.dsn, "SELECT received FROM neon.test_lfc")
        return None if found[0][0] is None else bytes(found[0][0])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute() -> AsyncIterator[Compute]:
    base = pgserver.scratch_dir("lfc-neon-")
    port = pgserver.free_port()
    try:
        async with endpoint_storage.serving() as storage:
            raw = lfcsupport.spec(port=port, storage=storage)
            n = lfcsupport.make_node(base / "pgdata", port=port, raw_spec=raw)
            async with lfcsupport.running(n) as api:
                await lfcsupport.rows(n.connstr(), STAND_INS.replace("%s", "NULL"))
                c = Compute(api, storage, port=port)
                await c.set_stand_in("state", STATE)
                yield c
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_initial_states_and_metrics_at_zero(compute: Compute) -> None:
    api = compute.api
    assert await api.call("GET", "/lfc/prewarm") == (200, {"status": "not_prewarmed"})
    assert await api.call("GET", "/lfc/offload") == (200, {"status": "not_offloaded"})
    for name in ("prewarms", "prewarm_errors", "offloads", "offload_errors"):
        assert await api.metric(f"compute_ctl_lfc_{name}_total") == 0


async def test_routes_need_the_token_on_the_external_port(compute: Compute) -> None:
    for method, path in [("GET", "/lfc/prewarm"), ("POST", "/lfc/offload")]:
        async with compute.api.session.request(method, compute.api.external + path) as r:
            assert r.status == 401, (method, path)


async def test_offload_uploads_the_compressed_state(compute: Compute) -> None:
    api = compute.api
    assert await api.call("POST", "/lfc/offload") == (202, "")
    body = await api.wait_state("offload", ["completed", "failed"])
    assert body["status"] == "completed", body
    assert set(body) == {
        "status",
        "state_query_time_ms",
        "compress_time_ms",
        "state_upload_time_ms",
    }
    assert zstandard.ZstdDecompressor().decompress(compute.storage.objects[OBJECT]) == STATE
    assert ("PUT", OBJECT, 200) in compute.storage.requests
    assert await api.metric("compute_ctl_lfc_offloads_total") == 1


async def test_prewarm_loads_the_stored_state(compute: Compute) -> None:
    api = compute.api
    assert await api.call("POST", "/lfc/prewarm") == (202, "")
    body = await api.wait_state("prewarm", ["completed", "failed"])
    assert body["status"] == "completed", body
    assert {k: body[k] for k in ("total", "prewarmed", "skipped")} == {
        "total": 10,
        "prewarmed": 7,
        "skipped": 3,
    }
    assert {"state_download_time_ms", "uncompress_time_ms", "prewarm_time_ms"} <= set(body)
    assert await compute.received() == STATE
    assert await api.metric("compute_ctl_lfc_prewarms_total") == 1


async def test_prewarm_from_another_endpoint_and_without_state(compute: Compute) -> None:
    api = compute.api
    # The spec's token names this endpoint only: the storage would refuse another one.
    assert await api.call("POST", "/lfc/prewarm?from_endpoint=ep-other") == (202, "")
    body = await api.wait_state("prewarm", ["skipped", "failed", "completed"])
    assert body["status"] == "failed", body
    assert "401 Unauthorized querying endpoint storage" in body["error"]
    code, error = await api.call("POST", "/lfc/prewarm?other=1")
    assert code == 400
    assert "from_endpoint" in error["error"]
    compute.storage.objects.clear()
    assert await api.call("POST", "/lfc/prewarm") == (202, "")
    assert await api.wait_state("prewarm", ["skipped", "failed", "completed"]) == {
        "status": "skipped"
    }
    assert await api.metric("compute_ctl_lfc_prewarm_errors_total") == 1


async def test_offload_of_null_state_is_skipped(compute: Compute) -> None:
    api = compute.api
    await compute.set_stand_in("state", None)
    try:
        assert await api.call("POST", "/lfc/offload") == (202, "")
        assert await api.wait_state("offload", ["skipped", "completed", "failed"]) == {
            "status": "skipped"
        }
        assert OBJECT not in compute.storage.objects
    finally:
        await compute.set_stand_in("state", STATE)


async def test_offload_failure_is_reported_and_counted(compute: Compute) -> None:
    api = compute.api
    errors_before = await api.metric("compute_ctl_lfc_offload_errors_total")
    compute.storage.fail_with = 500
    try:
        assert await api.call("POST", "/lfc/offload") == (202, "")
        body = await api.wait_state("offload", ["failed", "completed"])
    finally:
        compute.storage.fail_with = None
    assert body == {
        "status": "failed",
        "error": "request to endpoint storage failed: 500 Internal Server Error",
    }
    assert await api.metric("compute_ctl_lfc_offload_errors_total") == errors_before + 1


async def test_single_flight_and_cancel_while_downloading(compute: Compute) -> None:
    api = compute.api
    compute.storage.hold = asyncio.Event()
    try:
        assert await api.call("POST", "/lfc/prewarm") == (202, "")
        assert await api.call("GET", "/lfc/prewarm") == (200, {"status": "prewarming"})
        assert await api.call("POST", "/lfc/prewarm") == (
            429,
            {"error": "Multiple requests for prewarm are not allowed"},
        )
        assert await api.call("DELETE", "/lfc/prewarm") == (202, "")
        assert await api.wait_state("prewarm", ["cancelled", "failed"]) == {"status": "cancelled"}
    finally:
        compute.storage.hold.set()
        compute.storage.hold = None
    # Neon leaves a DELETE made while nothing runs pending for the next prewarm; not here.
    assert await api.call("DELETE", "/lfc/prewarm") == (202, "")
    assert await api.call("POST", "/lfc/offload") == (202, "")
    await api.wait_state("offload", ["completed"])
    assert await api.call("POST", "/lfc/prewarm") == (202, "")
    assert (await api.wait_state("prewarm", ["completed", "cancelled", "failed"]))["status"] == (
        "completed"
    )


async def test_cancel_inside_the_sql_function_cancels_the_query(compute: Compute) -> None:
    api = compute.api
    await compute.set_stand_in("received", None)
    await compute.set_stand_in("sleep", 60)
    try:
        assert await api.call("POST", "/lfc/prewarm") == (202, "")
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'compute_ctl:lfc'"
            " AND wait_event = 'PgSleep'"
        )

        async def sleeping() -> int:
            return int((await lfcsupport.rows(compute.dsn, query))[0][0])

        deadline = asyncio.get_running_loop().time() + 30
        while await sleeping() == 0:
            assert asyncio.get_running_loop().time() < deadline, "prewarm never reached SQL"
            await asyncio.sleep(0.02)
        assert await api.call("DELETE", "/lfc/prewarm") == (202, "")
        assert await api.wait_state("prewarm", ["cancelled", "failed"]) == {"status": "cancelled"}
        deadline = asyncio.get_running_loop().time() + 30
        while await sleeping() != 0:  # the server-side query was cancelled, not left running
            assert asyncio.get_running_loop().time() < deadline, "the query still runs"
            await asyncio.sleep(0.02)
        assert await compute.received() is None
    finally:
        await compute.set_stand_in("sleep", 0)


async def test_periodic_offload_follows_the_spec_and_is_gated_by_prewarm(
    compute: Compute, caplog: pytest.LogCaptureFixture
) -> None:
    api = compute.api
    n: node_mod.ComputeNode = api.node
    # The previous test left a cancelled prewarm, which suppresses periodic offloads.
    assert await api.call("POST", "/lfc/offload") == (202, "")
    await api.wait_state("offload", ["completed"])
    assert await api.call("POST", "/lfc/prewarm") == (202, "")
    await api.wait_state("prewarm", ["completed"])
    # Beyond Neon: a reconfigure starts it (Neon reads the interval at start only).
    raw = lfcsupport.spec(
        port=compute.port,
        storage=compute.storage,
        offload_lfc_interval_seconds=1,
    )
    await n.configure(helpers.config(raw))
    offloads = await api.metric("compute_ctl_lfc_offloads_total")
    deadline = asyncio.get_running_loop().time() + 30
    while await api.metric("compute_ctl_lfc_offloads_total") < offloads + 2:
        assert asyncio.get_running_loop().time() < deadline, "no periodic offload"
        await asyncio.sleep(0.05)
    # A failed prewarm suppresses it.
    compute.storage.fail_with = 503
    try:
        assert await api.call("POST", "/lfc/prewarm") == (202, "")
        await api.wait_state("prewarm", ["failed"])
    finally:
        compute.storage.fail_with = None
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.lfc.controller")
    offloads = await api.metric("compute_ctl_lfc_offloads_total")
    await helpers.wait_until(
        lambda: "periodic offload skipped: prewarm failed" in caplog.text, timeout=30
    )
    assert await api.metric("compute_ctl_lfc_offloads_total") == offloads
    raw.pop("offload_lfc_interval_seconds")
    await n.configure(helpers.config(raw))


async def test_autoprewarm_of_neons_lfc_does_not_hold_the_start() -> None:
    """As in Neon, a compute whose LFC prewarm is still running reports ``running``
    (a vanilla one waits for it: ``test_lfc_vanilla``)."""
    base = pgserver.scratch_dir("lfc-neon-auto-")
    port = pgserver.free_port()
    try:
        async with endpoint_storage.serving() as storage:
            raw = lfcsupport.spec(port=port, storage=storage)
            first = lfcsupport.make_node(base / "pgdata", port=port, raw_spec=raw, keep_pgdata=True)
            async with lfcsupport.running(first) as api:
                await lfcsupport.rows(first.connstr(), STAND_INS.replace("%s", "NULL"))
                await lfcsupport.rows(
                    first.connstr(), "UPDATE neon.test_lfc SET state = %s, sleep = 60", [STATE]
                )
                assert await api.call("POST", "/lfc/offload") == (202, "")
                await api.wait_state("offload", ["completed"])
            raw_auto = {**raw, "autoprewarm": True}
            second = lfcsupport.make_node(
                base / "pgdata", port=port, raw_spec=raw_auto, keep_pgdata=True
            )
            async with lfcsupport.running(second) as api:
                assert await api.call("GET", "/lfc/prewarm") == (200, {"status": "prewarming"})
                assert await api.call("DELETE", "/lfc/prewarm") == (202, "")
                await api.wait_state("prewarm", ["cancelled"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
