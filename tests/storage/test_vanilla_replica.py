"""A compute as a hot standby of a vanilla PostgreSQL primary (``primary_connstring``)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from compute_ctl.compute import errors, state, storage
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import replica
from tests import pgserver
from tests.storage.compute import Compute


def replica_spec(primary: str) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [], "databases": []},
            "mode": "Replica",
            "primary_connstring": primary,
        }
    )


async def rows(dsn: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("select note from notes order by note")
        return [str(r[0]) for r in await cur.fetchall()]


async def test_replica_follows_the_primary_and_reports_its_replay_lsn(
    pg: pgserver.PgServer, compute: Compute
) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("create table notes (note text)")
        await conn.execute("insert into notes values ('before the clone')")

    spec = replica_spec(pg.dsn())
    compute.write_conf(spec)
    timings = state.Timings()
    await storage.prepare(spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=timings)
    assert timings.basebackup_ms > 0
    assert (compute.pgdata / "standby.signal").exists()
    assert "primary_conninfo" in (compute.pgdata / "postgresql.auto.conf").read_text()
    # Our conf, not the primary's: the compute listens on its own port.
    assert f"port = {compute.port}" in (compute.pgdata / "postgresql.conf").read_text()

    await compute.start()
    assert await rows(compute.dsn()) == ["before the clone"]
    async with await psycopg.AsyncConnection.connect(compute.dsn()) as conn:
        cur = await conn.execute("select pg_is_in_recovery()")
        assert await cur.fetchone() == (True,)

    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("insert into notes values ('written later')")
        cur = await conn.execute("select pg_current_wal_lsn()::text")
        written = await cur.fetchone()
    assert written is not None

    deadline = time.monotonic() + 30
    while await rows(compute.dsn()) != ["before the clone", "written later"]:
        assert time.monotonic() < deadline, "the replica never saw the new row"
        await asyncio.sleep(0.05)  # polling a condition, with a deadline

    replayed = await storage.lsn_before_stop(spec=spec, connstr=compute.dsn())
    assert replayed is not None
    assert spec_mod.lsn_to_int(replayed) >= spec_mod.lsn_to_int(str(written[0]))
    await compute.stop()
    lsn = await storage.final_lsn(
        spec=spec,
        pgdata=compute.pgdata,
        tools=pgserver.tools(),
        timings=timings,
        replayed_lsn=replayed,
    )
    assert lsn == replayed


async def test_an_unreachable_primary_is_a_storage_error(compute: Compute) -> None:
    spec = replica_spec(f"postgresql://u:hunter2@127.0.0.1:{pgserver.free_port()}/postgres")
    with pytest.raises(errors.StorageError, match="cloning the primary failed") as info:
        await storage.prepare(
            spec=spec, pgdata=compute.pgdata, tools=pgserver.tools(), timings=state.Timings()
        )
    assert "hunter2" not in str(info.value)


def test_the_password_travels_apart_from_the_connstring() -> None:
    conninfo, password = replica._split_password("postgresql://u:pw@db:5432/app")
    assert password == "pw"
    assert "pw" not in conninfo.replace("app", "")
    assert psycopg.conninfo.conninfo_to_dict(conninfo) == {
        "user": "u",
        "host": "db",
        "port": "5432",
        "dbname": "app",
    }
