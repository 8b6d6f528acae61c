"""Neon's system phases against a real PostgreSQL: schema ``neon``, the ``neon``
extension (absent on vanilla), ``public.health_check``, and CREATE on schema ``public``
for ``web_access``; each planned only when observation shows it missing."""

from __future__ import annotations

import psycopg
import pytest

from compute_ctl.compute.catalog import db, health_check, observe
from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver
from tests.catalog.conftest import (
    PRIVILEGED,
    apply,
    database,
    delta,
    execute,
    fetch,
    make_spec,
    replan,
    role,
)

pytestmark = pytest.mark.postgres

Phase = plan_mod.Phase


def web_access_can_create(server: pgserver.PgServer, dbname: str) -> bool:
    rows = fetch(
        server.dsn(dbname), "select has_schema_privilege('web_access', 'public', 'CREATE')"
    )
    return bool(rows[0][0])


async def test_schema_neon_and_health_check_created_once(pgc: pgserver.PgServer) -> None:
    empty = make_spec()
    # The control: vanilla PostgreSQL offers no `neon` extension, so none is planned.
    assert fetch(pgc.dsn(), "select 1 from pg_available_extensions where name = 'neon'") == []
    first = await apply(pgc, empty)
    assert [op.phase for op in first.plan if op.phase is not Phase.EXTENSIONS] == [
        Phase.CREATE_PRIVILEGED_ROLE,
        Phase.CREATE_SCHEMA_NEON,
        Phase.AVAILABILITY_CHECK,
    ]
    assert all(op.database is None for op in first.plan)  # the maintenance database
    assert fetch(pgc.dsn(), "select 1 from pg_namespace where nspname = 'neon'") == [(1,)]
    assert fetch(
        pgc.dsn(),
        "select attname, format_type(atttypid, atttypmod), attidentity from pg_attribute "
        "where attrelid = 'public.health_check'::regclass and attnum > 0 order by attnum",
    ) == [("id", "integer", "d"), ("updated_at", "timestamp with time zone", "")]
    assert fetch(pgc.dsn(), "select id from public.health_check") == [(1,)]
    assert not await replan(pgc, empty)

    # What /check_writability runs, on a plain session, against the table the apply made.
    with psycopg.connect(pgc.dsn(), autocommit=True) as conn:
        before = conn.execute("select updated_at from public.health_check").fetchone()
        conn.execute(health_check.UPSERT_ROW)
        after = conn.execute("select id, updated_at from public.health_check").fetchall()
    assert before is not None
    assert len(after) == 1
    assert after[0][0] == 1
    assert after[0][1] > before[0]

    # Dropped behind our back: exactly those two come back.
    execute(pgc.dsn(), "DROP TABLE public.health_check", "DROP SCHEMA neon")
    plan = await replan(pgc, empty)
    assert [op.phase for op in plan] == [Phase.CREATE_SCHEMA_NEON, Phase.AVAILABILITY_CHECK]
    await apply(pgc, empty)
    assert not await replan(pgc, empty)


async def test_check_writability_statements_create_the_same_table(
    pgc: pgserver.PgServer,
) -> None:
    """Whoever creates it first (the apply or /check_writability), the table is one."""
    with psycopg.connect(pgc.dsn(), autocommit=True) as conn:
        conn.execute(health_check.CREATE_TABLE)
        conn.execute(health_check.UPSERT_ROW)
    plan = await replan(pgc, make_spec())
    assert Phase.AVAILABILITY_CHECK not in {op.phase for op in plan}


async def test_web_access_gets_create_on_public(pgc: pgserver.PgServer) -> None:
    databases = [database("one", "o"), database("two", "o")]
    without = make_spec(roles=[role("o")], databases=databases)
    await apply(pgc, without)
    # The control: since PostgreSQL 15 nobody but the owner may create in public.
    execute(pgc.dsn(), "CREATE ROLE web_access NOLOGIN")
    assert not web_access_can_create(pgc, "one")

    plan = await replan(pgc, without)
    assert [(op.phase, op.database, op.render()) for op in plan] == [
        (Phase.PER_DATABASE, name, 'GRANT CREATE ON SCHEMA public TO "web_access"')
        for name in ("one", "two")
    ]
    await apply(pgc, without)
    assert web_access_can_create(pgc, "one")
    assert web_access_can_create(pgc, "two")
    assert not await replan(pgc, without)

    # Revoked behind our back in one database: only that one is visited and granted.
    execute(pgc.dsn("two"), "REVOKE CREATE ON SCHEMA public FROM web_access")
    async with db.connect(pgc.dsn()) as conn:
        catalog = await observe.snapshot(
            conn, connstr=pgc.dsn(), privileged_role=PRIVILEGED, visit=["one", "two"]
        )
    assert catalog.databases["one"].public_owner is None  # not visited: pg_shdepend
    assert catalog.databases["two"].public_owner == "pg_database_owner"
    assert not catalog.databases["two"].web_access_create
    plan = await replan(pgc, without)
    assert [(op.phase, op.database) for op in plan] == [(Phase.PER_DATABASE, "two")]
    await apply(pgc, without)
    assert web_access_can_create(pgc, "two")
    assert not await replan(pgc, without)


async def test_usage_alone_is_no_create_for_web_access(pgc: pgserver.PgServer) -> None:
    """USAGE alone leaves the same pg_shdepend trace as CREATE; a visit reads the ACL."""
    execute(pgc.dsn(), "CREATE ROLE o", "CREATE ROLE web_access", "CREATE DATABASE d OWNER o")
    execute(pgc.dsn("d"), "GRANT USAGE ON SCHEMA public TO web_access")
    compute_spec = make_spec(roles=[role("o")], databases=[database("d", "o")])
    await apply(pgc, compute_spec)
    assert web_access_can_create(pgc, "d")
    assert not await replan(pgc, compute_spec)


async def test_a_deleted_web_access_gets_no_grant(pgc: pgserver.PgServer) -> None:
    execute(pgc.dsn(), "CREATE ROLE web_access")
    deleting = make_spec(
        roles=[role("o")],
        databases=[database("d", "o")],
        deltas=[delta("delete_role", "web_access")],
    )
    plan = await replan(pgc, deleting)
    assert "web_access" not in " ".join(op.render() for op in plan.phase(Phase.PER_DATABASE))
    await apply(pgc, deleting)
    assert fetch(pgc.dsn(), "select 1 from pg_roles where rolname = 'web_access'") == []
    assert not await replan(pgc, deleting)
