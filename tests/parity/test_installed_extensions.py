"""The installed-extensions report over several databases of a real PostgreSQL: the
``compute_installed_extensions`` gauge with Neon's labels, the exclusion of databases
that refuse connections, the schedule and the interval rules."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from prometheus_client import exposition

from compute_ctl.compute import installed_extensions as ext
from compute_ctl.compute import metrics, state
from compute_ctl.compute import spec as spec_mod
from tests import pgserver

pytestmark = pytest.mark.postgres

DATABASES = ("ext_a", "ext_b", "ext_c", "ext_closed")


def _sql(pg: pgserver.PgServer, query: str, *, dbname: str = "postgres") -> None:
    with psycopg.connect(pg.dsn(dbname), autocommit=True) as conn:
        conn.execute(query)


@pytest.fixture(scope="module")
def databases(pg: pgserver.PgServer) -> pgserver.PgServer:
    for name in DATABASES:
        _sql(pg, f"CREATE DATABASE {name}")
    _sql(pg, "CREATE ROLE ext_owner LOGIN")
    _sql(pg, "GRANT CREATE ON DATABASE ext_c TO ext_owner")
    _sql(pg, "CREATE EXTENSION pg_stat_statements", dbname="ext_a")
    _sql(pg, "CREATE EXTENSION pgcrypto", dbname="ext_a")
    _sql(pg, "CREATE EXTENSION pg_stat_statements", dbname="ext_b")
    # pgcrypto is trusted: a non-superuser may create it, and then owns it.
    with psycopg.connect(pg.dsn("ext_c", user="ext_owner"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgcrypto")
    _sql(pg, "CREATE EXTENSION hstore", dbname="ext_closed")
    _sql(pg, "ALTER DATABASE ext_closed WITH ALLOW_CONNECTIONS false")
    return pg


def _gauge(m: metrics.Metrics) -> dict[tuple[str, str, str], float]:
    found = {}
    for family in m.registry.collect():
        if family.name == "compute_installed_extensions":
            assert family.type == "gauge"
            for sample in family.samples:
                labels = sample.labels
                assert set(labels) == {"extension_name", "version", "owned_by_superuser"}
                key = (labels["extension_name"], labels["version"], labels["owned_by_superuser"])
                found[key] = sample.value
    return found


def _version(pg: pgserver.PgServer, name: str) -> str:
    with psycopg.connect(pg.dsn("ext_a"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = %s", [name]
        ).fetchone()
    assert row is not None
    return str(row[0])


async def test_gauge_counts_databases_per_extension_version_and_owner(
    databases: pgserver.PgServer,
) -> None:
    m = metrics.Metrics(build_tag="t", state=state.ComputeState())
    await ext.report(connstr=databases.dsn(), metrics=m)
    gauge = _gauge(m)
    pgcrypto = _version(databases, "pgcrypto")
    pss = _version(databases, "pg_stat_statements")
    # postgres, template1, ext_a, ext_b, ext_c: plpgsql everywhere; ext_closed and
    # template0 (no connections) are not counted, so hstore is absent.
    assert gauge[("plpgsql", "1.0", "1")] == 5
    assert gauge[("pg_stat_statements", pss, "1")] == 2
    assert gauge[("pgcrypto", pgcrypto, "1")] == 1
    assert gauge[("pgcrypto", pgcrypto, "0")] == 1  # owned by ext_owner
    assert not any(name == "hstore" for name, _, _ in gauge)
    text = exposition.generate_latest(m.registry).decode()
    assert (
        f'compute_installed_extensions{{extension_name="pgcrypto",'
        f'owned_by_superuser="0",version="{pgcrypto}"}} 1.0'
    ) in text

    # A later collection replaces the series (beyond Neon): a dropped extension goes away.
    _sql(databases, "DROP EXTENSION pg_stat_statements", dbname="ext_b")
    await ext.report(connstr=databases.dsn(), metrics=m)
    assert _gauge(m)[("pg_stat_statements", pss, "1")] == 1
    _sql(databases, "CREATE EXTENSION pg_stat_statements", dbname="ext_b")


async def test_a_failed_collection_leaves_the_gauge(
    databases: pgserver.PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    m = metrics.Metrics(build_tag="t", state=state.ComputeState())
    await ext.report(connstr=databases.dsn(), metrics=m)
    before = _gauge(m)
    await ext.report(connstr=f"postgresql://nobody@127.0.0.1:{pgserver.free_port()}/x", metrics=m)
    assert "could not get installed extensions" in caplog.text
    assert _gauge(m) == before


async def test_periodic_collection_sleeps_first_and_never_shrinks(
    databases: pgserver.PgServer,
) -> None:
    m = metrics.Metrics(build_tag="t", state=state.ComputeState())
    calls: list[float] = []

    def interval() -> float:
        calls.append(0.05)
        return 0.05

    task = asyncio.create_task(
        ext.run_periodically(connstr=databases.dsn(), metrics=m, interval=interval)
    )
    try:
        assert _gauge(m) == {}  # nothing before the first sleep
        deadline = asyncio.get_running_loop().time() + 30
        while not _gauge(m):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _spec(suspend: int) -> spec_mod.ComputeSpec:
    raw: dict[str, Any] = {
        "format_version": 1.0,
        "suspend_timeout_seconds": suspend,
        "cluster": {"roles": [], "databases": []},
    }
    return spec_mod.ComputeSpec.model_validate(raw)


@pytest.mark.parametrize(("suspend", "expected"), [(-1, 900), (0, 900), (300, 300)])
def test_interval_from_the_spec(suspend: int, expected: int) -> None:
    assert ext.interval_from_spec(_spec(suspend), default=900) == expected
