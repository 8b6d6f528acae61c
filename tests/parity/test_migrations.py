"""Neon's migrations on real PostgreSQL, held to Neon's own postconditions
(``compute_tools/src/migrations/tests``): twice for idempotence, then a failure injected at
migration N with ``compute-migration=return(N)`` and a clean rerun."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from compute_ctl.compute import failpoints, metrics, state
from compute_ctl.compute.migrations import runner
from tests import pgserver

pytestmark = pytest.mark.postgres

P = "neon_superuser"


def _sql(pg: pgserver.PgServer, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def cluster(pg: pgserver.PgServer) -> Iterator[pgserver.PgServer]:
    """The privileged role as Neon's CreatePrivilegedRole phase makes it (minus BYPASSRLS,
    so migration 1 shows), a member that does not inherit, and an outsider with BYPASSRLS
    (the roles migration 2 repairs); all of it removed afterwards."""
    _sql(
        pg,
        f"CREATE ROLE {P} CREATEDB CREATEROLE NOLOGIN REPLICATION "
        "IN ROLE pg_read_all_data, pg_write_all_data",
    )
    _sql(pg, f"CREATE ROLE member_noinherit NOINHERIT IN ROLE {P}")
    _sql(pg, "CREATE ROLE outsider BYPASSRLS")
    try:
        yield pg
    finally:
        _sql(pg, "DROP SCHEMA IF EXISTS neon_migration CASCADE")
        _sql(pg, "DROP ROLE member_noinherit, outsider")
        _sql(pg, f"DROP OWNED BY {P}")
        _sql(pg, f"REVOKE EXECUTE ON FUNCTION pg_show_replication_origin_status() FROM {P}")
        _sql(pg, f"DROP ROLE {P}")


def _metrics() -> metrics.Metrics:
    return metrics.Metrics(build_tag="test", state=state.ComputeState())


def _failed(m: metrics.Metrics, migration_id: int) -> float | None:
    registry: CollectorRegistry = m.registry
    return registry.get_sample_value(
        "compute_ctl_db_migration_failed_total", {"migration_id": str(migration_id)}
    )


def _stored_id(pg: pgserver.PgServer) -> int:
    rows = _sql(pg, "SELECT id FROM neon_migration.migration_id")
    assert len(rows) == 1
    return int(rows[0][0])


def _assert_postconditions(pg: pgserver.PgServer) -> None:
    version = int(_sql(pg, "SHOW server_version_num")[0][0])
    # 1: BYPASSRLS for P.
    assert _sql(pg, "SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", [P]) == [(True,)]
    # 2: every member of P inherits; no non-member outside pg_* bypasses RLS.
    assert (
        _sql(
            pg,
            "SELECT rolname FROM pg_roles WHERE pg_has_role(rolname, %s, 'member') "
            "AND NOT rolinherit",
            [P],
        )
        == []
    )
    assert (
        _sql(
            pg,
            "SELECT rolname FROM pg_roles WHERE NOT pg_has_role(rolname, %s, 'member') "
            "AND rolname NOT LIKE 'pg\\_%%' AND rolbypassrls",
            [P],
        )
        == []
    )
    # 3: PG16+ only.
    if version >= 160000:
        assert _sql(pg, "SELECT pg_has_role(%s, 'pg_create_subscription', 'member')", [P]) == [
            (True,)
        ]
    # 4 and 12: admin membership in pg_monitor and pg_signal_backend.
    for granted in ("pg_monitor", "pg_signal_backend"):
        assert _sql(
            pg,
            "SELECT admin_option FROM pg_auth_members "
            "WHERE roleid = %s::regrole AND member = %s::regrole",
            [granted, P],
        ) == [(True,)], granted
    # 10 (PG16+) and 11: execute on the functions.
    functions = ["pg_show_replication_origin_status()"]
    if version >= 160000:
        functions += ["pg_export_snapshot()", "pg_log_standby_snapshot()"]
    for fn in functions:
        assert _sql(pg, "SELECT has_function_privilege(%s, %s, 'execute')", [P, fn]) == [(True,)]


async def test_all_migrations_meet_neons_postconditions_twice(cluster: pgserver.PgServer) -> None:
    m = _metrics()
    outcome = await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m)
    assert outcome == runner.Outcome(applied=12, latest=12)
    assert _stored_id(cluster) == 12
    _assert_postconditions(cluster)
    # Migration 2 repaired the two roles.
    assert _sql(cluster, "SELECT rolinherit FROM pg_roles WHERE rolname = 'member_noinherit'") == [
        (True,)
    ]
    assert _sql(cluster, "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'outsider'") == [
        (False,)
    ]
    # The progress schema is private.
    assert _sql(cluster, "SELECT has_schema_privilege('public', 'neon_migration', 'usage')") == [
        (False,)
    ]

    # Idempotent: a second start changes nothing (the outsider keeps a re-granted BYPASSRLS,
    # because migration 2 does not run again).
    _sql(cluster, "ALTER ROLE outsider BYPASSRLS")
    again = await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m)
    assert again == runner.Outcome(applied=12, latest=12)
    assert _stored_id(cluster) == 12
    assert _sql(cluster, "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'outsider'") == [
        (True,)
    ]
    _sql(cluster, "ALTER ROLE outsider NOBYPASSRLS")
    _assert_postconditions(cluster)
    assert _failed(m, 1) is None


async def test_a_failed_migration_stops_the_run_and_the_next_start_retries(
    cluster: pgserver.PgServer,
) -> None:
    m = _metrics()
    fps = failpoints.Failpoints(enabled=True)
    fps.set(runner.FAILPOINT, "return(4)")
    outcome = await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m, failpoints=fps)
    assert outcome.failed_id == 4
    assert outcome.applied == 3
    assert outcome.error is not None
    assert _stored_id(cluster) == 3  # 1..3 committed, 4 rolled back
    assert _failed(m, 4) == 1.0
    # Migration 4's grant was rolled back with its id update.
    assert _sql(
        cluster,
        "SELECT count(*) FROM pg_auth_members WHERE roleid = 'pg_monitor'::regrole "
        "AND member = %s::regrole",
        [P],
    ) == [(0,)]
    assert _sql(cluster, "SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", [P]) == [(True,)]

    fps.set(runner.FAILPOINT, "off")
    outcome = await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m, failpoints=fps)
    assert outcome == runner.Outcome(applied=12, latest=12)
    assert _stored_id(cluster) == 12
    _assert_postconditions(cluster)
    assert _failed(m, 4) == 1.0


async def test_a_downgraded_compute_runs_nothing(cluster: pgserver.PgServer) -> None:
    m = _metrics()
    await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m)
    _sql(cluster, "UPDATE neon_migration.migration_id SET id = 40")
    outcome = await runner.run(connstr=cluster.dsn(), privileged_role=P, metrics=m)
    assert outcome == runner.Outcome(applied=40, latest=12)
    assert _stored_id(cluster) == 40


def test_packaged_migrations_are_numbered_and_skips_are_neons() -> None:
    found = runner.migrations()
    assert [m.id for m in found] == list(range(1, 13))
    assert [m.id for m in found if m.skipped] == [5, 6, 7, 8, 9]
