"""Dry runs change nothing; drift is reported per object and corrected by the next apply."""

from __future__ import annotations

import json

import pytest

from compute_ctl.compute.catalog import apply as catalog_apply
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
    md5_hash,
    option,
    replan,
    role,
    scram_verifier,
)

pytestmark = pytest.mark.postgres

CATALOG_QUERY = (
    "select 'role', rolname || coalesce(rolpassword, '') || rolcanlogin::text "
    "|| rolconnlimit::text from pg_authid "
    "union all select 'db', datname || datdba::text || coalesce(datacl::text, '') "
    "from pg_database "
    "union all select 'ext', extname from pg_extension "
    "union all select 'ns', nspname from pg_namespace "
    "union all select 'rel', relname from pg_class where relnamespace = 'public'::regnamespace "
    "order by 1, 2"
)


async def test_dry_run_plans_everything_and_changes_nothing(pgc: pgserver.PgServer) -> None:
    execute(pgc.dsn(), "CREATE ROLE doomed", "CREATE DATABASE doomed_db")
    secret = scram_verifier("hunter2")
    compute_spec = make_spec(
        roles=[role("app", secret), role("other", md5_hash("x", "other"))],
        databases=[database("appdb", "app")],
        deltas=[delta("delete_role", "doomed"), delta("delete_db", "doomed_db")],
    )
    before = fetch(pgc.dsn(), CATALOG_QUERY)
    plan = await replan(pgc, compute_spec)
    assert fetch(pgc.dsn(), CATALOG_QUERY) == before

    phases = [op.phase for op in plan]
    assert phases == sorted(phases, key=list(plan_mod.Phase).index)  # Neon's order
    assert set(phases) == {
        plan_mod.Phase.CREATE_PRIVILEGED_ROLE,
        plan_mod.Phase.CREATE_AND_ALTER_ROLES,
        plan_mod.Phase.RENAME_AND_DELETE_DATABASES,
        plan_mod.Phase.CREATE_AND_ALTER_DATABASES,
        plan_mod.Phase.CREATE_SCHEMA_NEON,
        plan_mod.Phase.PER_DATABASE,
        plan_mod.Phase.EXTENSIONS,
        plan_mod.Phase.AVAILABILITY_CHECK,
        plan_mod.Phase.DROP_ROLES,
    }
    rendered = json.dumps(plan.to_json())
    assert secret not in rendered
    assert md5_hash("x", "other") not in rendered
    assert "'<redacted>'" in rendered
    first = plan.to_json()[1]
    assert first == {
        "phase": "create_and_alter_roles",
        "database": None,
        # No CREATEROLE before PostgreSQL 16 (roles.createrole_by_default).
        "sql": 'CREATE ROLE "app" WITH CREATEDB INHERIT LOGIN REPLICATION BYPASSRLS '
        "PASSWORD '<redacted>' IN ROLE \"neon_superuser\"",
        "comment": "create role 'app'",
    }
    assert plan.statement_count == sum(len(op.statements) for op in plan)
    assert secret not in plan.render()

    # Applying executes exactly the dry-run plan, after which the plan is empty.
    result = await apply(pgc, compute_spec)
    assert result.plan.to_json() == plan.to_json()
    assert result.statements_executed == plan.statement_count
    assert not await replan(pgc, compute_spec)


async def test_drift_reported_per_object_then_corrected(pgc: pgserver.PgServer) -> None:
    compute_spec = make_spec(
        roles=[
            role("alice", scram_verifier("a"), [option("CONNECTION LIMIT", "5", "integer")]),
            role("bob", md5_hash("b", "bob")),
            role("carol"),
        ],
        databases=[database("shop", "alice"), database("blog", "bob")],
    )
    await apply(pgc, compute_spec)
    no_drift = await catalog_apply.drift_report(
        connstr=pgc.dsn(), spec=compute_spec, privileged_role=PRIVILEGED
    )
    assert not no_drift
    assert no_drift.to_json() == []

    # Behind our back:
    execute(
        pgc.dsn(),
        "ALTER ROLE alice NOLOGIN CONNECTION LIMIT 9",
        "ALTER ROLE bob PASSWORD 'md500000000000000000000000000000000'",
        "ALTER DATABASE shop OWNER TO bob",
        "REVOKE ALL ON DATABASE blog FROM neon_superuser",
        "DROP ROLE carol",
    )
    execute(pgc.dsn(), "DROP DATABASE blog")
    report = await catalog_apply.drift_report(
        connstr=pgc.dsn(), spec=compute_spec, privileged_role=PRIVILEGED
    )
    by_object = {(e["kind"], e["name"]): e for e in report.to_json()}
    assert set(by_object) == {
        ("role", "alice"),
        ("role", "bob"),
        ("role", "carol"),
        ("database", "shop"),
        ("database", "blog"),
    }
    assert by_object["role", "alice"]["changes"] == [
        {"field": "login", "observed": False, "desired": True},
        {"field": "connlimit", "observed": 9, "desired": 5},
    ]
    assert by_object["role", "bob"]["changes"] == [
        {"field": "password", "observed": "<redacted>", "desired": "<redacted>"}
    ]
    assert by_object["role", "carol"]["missing"] is True
    assert by_object["database", "blog"]["missing"] is True
    assert by_object["database", "shop"]["changes"] == [
        {"field": "owner", "observed": "bob", "desired": "alice"}
    ]
    assert "md5" not in json.dumps(report.to_json())

    result = await apply(pgc, compute_spec)
    assert result.statements_executed > 0
    assert not await catalog_apply.drift_report(
        connstr=pgc.dsn(), spec=compute_spec, privileged_role=PRIVILEGED
    )
    assert not await replan(pgc, compute_spec)
    assert fetch(
        pgc.dsn(), "select rolcanlogin, rolconnlimit from pg_roles where rolname = 'alice'"
    ) == [(True, 5)]
