"""The Neon start path for real: safekeepers, pageserver basebackup, real postgres on it.

Test safekeepers and a test pageserver speak the wire protocol on loopback; the
pageserver streams a gzip tar of a real initdb'ed PGDATA; ``storage.prepare`` fetches
and unpacks it, and a real PostgreSQL starts on the result. ``--sync-safekeepers``
runs through the clearly named stand-in (``tests/storage/fake_sync_safekeepers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from compute_ctl.compute import errors, state, storage
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import basebackup, safekeepers
from tests import pgserver
from tests.storage import archive, doubles, neonbin
from tests.storage.compute import Compute

TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"
TOKEN = "eyJhbGciOiJFZERTQSJ9.e30.sig"
SYNCED = "0/169AD58"


@pytest.fixture(autouse=True)
def generous_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Neon's 100 ms per safekeeper is tight on a shared 2-core machine; the slow-path
    # tests make the fast path fail on purpose instead.
    monkeypatch.setattr(safekeepers, "TIMELINE_STATUS_TIMEOUT", 5.0)


def make_spec(
    pageserver: doubles.TestPageserver, sks: list[str], **fields: Any
) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [], "databases": []},
            "tenant_id": TENANT,
            "timeline_id": TIMELINE,
            "pageserver_connection_info": {
                "shard_count": 0,
                "shards": {"0000": {"pageservers": [{"id": 1, "libpq_url": pageserver.url}]}},
            },
            "safekeeper_connstrings": sks,
            "storage_auth_token": TOKEN,
            **fields,
        }
    )


@contextlib.asynccontextmanager
async def storage_services(
    archive_bytes: bytes, **kwargs: Any
) -> AsyncIterator[tuple[doubles.TestPageserver, list[doubles.TestSafekeeper]]]:
    async with doubles.storage_services(archive_bytes, token=TOKEN, **kwargs) as services:
        yield services


async def marker(dsn: str) -> tuple[str, bool]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("select note, pg_is_in_recovery() from basebackup_marker")
        row = await cur.fetchone()
    assert row is not None
    return str(row[0]), bool(row[1])


async def test_primary_fast_path_basebackup_and_real_postgres(
    compute: Compute, pgdata_archive: bytes, neon_bin: neonbin.NeonBin
) -> None:
    timings = state.Timings()
    tools = pgserver.tools()
    async with storage_services(
        pgdata_archive, sk_kwargs={"commit_lsn": SYNCED, "flush_lsn": SYNCED}
    ) as (ps, sks):
        spec = make_spec(ps, [sk.address for sk in sks])
        compute.write_conf(spec)
        await storage.prepare(
            spec=spec,
            pgdata=compute.pgdata,
            tools=tools,
            timings=timings,
            sync_pgbin=neon_bin.postgres,
        )
    # The fast path answered: no --sync-safekeepers run; the basebackup asked for that LSN.
    assert neon_bin.calls() == []
    (call,) = ps.calls
    assert (call.tenant, call.timeline, call.lsn, call.gzip, call.replica) == (
        TENANT,
        TIMELINE,
        SYNCED,
        True,
        False,
    )
    assert call.options == "-c neon.compute_mode=primary"
    assert call.application_name == "compute_ctl"
    assert ps.auth_failures == 0
    assert timings.basebackup_bytes == len(pgdata_archive)
    assert timings.pageserver_connect_micros > 0
    assert timings.basebackup_ms >= 0
    assert (compute.pgdata / "neon.signal").exists()
    assert not (compute.pgdata / "standby.signal").exists()
    # Our postgresql.conf survived the unpacking.
    assert "neon.safekeepers" in (compute.pgdata / "postgresql.conf").read_text()

    await compute.start()
    assert await marker(compute.dsn()) == (archive.MARKER, False)
    async with await psycopg.AsyncConnection.connect(compute.dsn(), autocommit=True) as conn:
        await conn.execute("create table written_by_compute (x int)")
    await compute.stop()

    # Terminate: after postgres stops, a primary syncs the safekeepers again.
    neon_bin.configure(lsn="0/1A2B3C4")
    lsn = await storage.final_lsn(
        spec=spec, pgdata=compute.pgdata, tools=tools, timings=timings, sync_pgbin=neon_bin.postgres
    )
    assert lsn == "0/1A2B3C4"
    (sync,) = neon_bin.calls()
    assert sync == {
        "pgdata": str(compute.pgdata),
        "token": TOKEN,
        "safekeepers": ",".join(sk.address for sk in sks),
    }


async def test_primary_slow_path_when_safekeepers_do_not_know_the_timeline(
    compute: Compute, pgdata_archive: bytes, neon_bin: neonbin.NeonBin
) -> None:
    neon_bin.configure(lsn="0/16B3748", fail=1)
    timings = state.Timings()
    async with storage_services(pgdata_archive, sk_kwargs={"knows_timeline": False}) as (ps, sks):
        spec = make_spec(ps, [sk.address for sk in sks], safekeepers_generation=4)
        # No conf written by the caller: prepare writes the storage lines for the sync.
        await storage.prepare(
            spec=spec,
            pgdata=compute.pgdata,
            tools=pgserver.tools(),
            timings=timings,
            sync_pgbin=neon_bin.postgres,
        )
    calls = neon_bin.calls()
    assert len(calls) == 2  # one failure, one retry
    assert calls[-1]["safekeepers"] == "g#4:" + ",".join(sk.address for sk in sks)
    assert calls[-1]["token"] == TOKEN
    assert ps.calls[0].lsn == "0/16B3748"
    assert timings.sync_safekeepers_ms >= 1000  # the first backoff is 1.1 s
    assert all(sk.queries == ["TIMELINE_STATUS"] for sk in sks if sk.queries)


async def test_replica_starts_as_a_hot_standby(compute: Compute, pgdata_archive: bytes) -> None:
    async with storage_services(pgdata_archive) as (ps, _):
        spec = make_spec(ps, [], mode="Replica")
        compute.write_conf(spec)
        await storage.prepare(
            spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=state.Timings()
        )
    (call,) = ps.calls
    assert (call.lsn, call.replica) == (None, True)
    assert call.options == "-c neon.compute_mode=replica"
    assert (compute.pgdata / "standby.signal").exists()
    await compute.start()
    assert await marker(compute.dsn()) == (archive.MARKER, True)
    await compute.stop()
    lsn = await storage.final_lsn(
        spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=state.Timings()
    )
    assert lsn is None


async def test_static_asks_for_its_lsn(compute: Compute, pgdata_archive: bytes) -> None:
    async with storage_services(pgdata_archive) as (ps, _):
        spec = make_spec(ps, [], mode={"Static": "0/16B3748"})
        compute.write_conf(spec)
        await storage.prepare(
            spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=state.Timings()
        )
    (call,) = ps.calls
    assert (call.lsn, call.replica) == ("0/16B3748", True)
    assert call.options == "-c neon.compute_mode=static"
    assert (compute.pgdata / "standby.signal").exists()
    assert "recovery_target_lsn='0/16B3748'" in (compute.pgdata / "postgresql.conf").read_text()


async def test_basebackup_retries_then_succeeds(compute: Compute, pgdata_archive: bytes) -> None:
    async with storage_services(pgdata_archive, fail_first=1) as (ps, _):
        spec = make_spec(ps, [], mode="Replica")
        await storage.prepare(
            spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=state.Timings()
        )
    assert len(ps.calls) == 2
    assert (compute.pgdata / "global" / "pg_control").exists()


def _request(ps: doubles.TestPageserver, *, token: str = TOKEN) -> basebackup.Request:
    return basebackup.Request(
        url=ps.url, tenant=TENANT, timeline=TIMELINE, lsn=None, mode_type="replica", token=token
    )


async def test_an_error_after_the_archive_end_fails_the_basebackup(
    compute: Compute, pgdata_archive: bytes
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with storage_services(pgdata_archive, error_after_archive=True) as (ps, _):
        with pytest.raises(errors.StorageError, match="timeline deleted"):
            await basebackup.fetch_with_retries(
                _request(ps),
                pgdata=compute.pgdata,
                owner=pgserver.tools().user,
                timings=state.Timings(),
                retries=2,
                sleep=sleep,
            )
    assert len(ps.calls) == 3
    assert slept == pytest.approx([0.5, 0.75])
    # Each retry starts from an emptied PGDATA; the conf we wrote would be kept.
    assert (compute.pgdata / "global" / "pg_control").exists()


async def test_the_token_is_the_password_and_never_leaks(
    compute: Compute, pgdata_archive: bytes
) -> None:
    async with storage_services(pgdata_archive, auth="md5") as (ps, _):
        await basebackup.fetch(
            _request(ps),
            pgdata=compute.pgdata,
            owner=pgserver.tools().user,
            timings=state.Timings(),
        )
        with pytest.raises(errors.StorageError) as info:
            await basebackup.fetch_with_retries(
                _request(ps, token="not-the-token"),
                pgdata=compute.pgdata,
                owner=pgserver.tools().user,
                timings=state.Timings(),
                retries=0,
            )
    assert ps.auth_failures == 1
    assert "not-the-token" not in str(info.value)
    assert "password authentication failed" in str(info.value)
