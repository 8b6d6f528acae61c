"""The pure planner on synthetic catalogs: no PostgreSQL, no I/O."""

from __future__ import annotations

import dataclasses

import pytest

from compute_ctl.compute import errors, spec
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import drift, model, planner
from compute_ctl.compute.catalog import plan as plan_mod
from tests.catalog.conftest import (
    PRIVILEGED,
    database,
    delta,
    make_spec,
    md5_hash,
    option,
    role,
    scram_verifier,
)

Phase = plan_mod.Phase


def base_catalog(**changes: object) -> model.Catalog:
    roles = {
        "cloud_admin": model.RoleInfo("cloud_admin", 10, superuser=True, login=True),
        PRIVILEGED: model.RoleInfo(PRIVILEGED, 16384, createdb=True, createrole=True),
    }
    catalog = model.Catalog(
        superuser="cloud_admin",
        server_version=150000,
        maintenance_db="postgres",
        roles=roles,
        databases={"postgres": model.DatabaseInfo("postgres", 5, "cloud_admin")},
        preloaded=frozenset({"pg_stat_statements"}),
        extensions=frozenset({"plpgsql", "pg_stat_statements"}),
        neon_schema=True,
        health_check=True,
    )
    return dataclasses.replace(catalog, **changes)  # type: ignore[arg-type]


def plan_for(compute_spec: spec.ComputeSpec, catalog: model.Catalog) -> plan_mod.Plan:
    return planner.plan(desired_mod.from_spec(compute_spec, privileged_role=PRIVILEGED), catalog)


def with_roles(catalog: model.Catalog, *infos: model.RoleInfo) -> model.Catalog:
    for info in infos:
        catalog = catalog.with_role(info)
    return catalog


def test_empty_catalog_plans_every_phase_in_neon_order() -> None:
    catalog = base_catalog(roles={"cloud_admin": model.RoleInfo("cloud_admin", 10)})
    catalog = dataclasses.replace(
        catalog, extensions=frozenset(), neon_schema=False, health_check=False
    )
    plan = plan_for(
        make_spec(roles=[role("app", md5_hash("p", "app"))], databases=[database("db", "app")]),
        catalog,
    )
    assert [op.phase for op in plan] == [
        Phase.CREATE_PRIVILEGED_ROLE,
        Phase.CREATE_AND_ALTER_ROLES,
        Phase.CREATE_AND_ALTER_DATABASES,
        Phase.CREATE_AND_ALTER_DATABASES,
        Phase.CREATE_SCHEMA_NEON,
        Phase.PER_DATABASE,
        Phase.EXTENSIONS,
        Phase.AVAILABILITY_CHECK,
    ]
    assert [op.transactional for op in plan.phase(Phase.CREATE_AND_ALTER_DATABASES)] == [
        False,
        True,
    ]
    assert bool(plan)
    assert len(plan) == 8


def test_matching_catalog_plans_nothing() -> None:
    verifier = scram_verifier("pw")
    catalog = with_roles(
        base_catalog(),
        model.RoleInfo("app", 20000, login=True, password=verifier, connlimit=4),
    ).with_database(
        model.DatabaseInfo("db", 20001, "app", privileged_grant=True, default_privileges=True)
    )
    compute_spec = make_spec(
        roles=[role("app", verifier, [option("CONNECTION LIMIT", "4", "integer")])],
        databases=[database("db", "app")],
        deltas=[
            delta("rename_role", "missing", "app"),
            delta("delete_role", "missing"),
            delta("rename_db", "missing", "db"),
            delta("delete_db", "missing"),
        ],
    )
    plan = plan_for(compute_spec, catalog)
    assert not plan
    assert plan.to_json() == []
    assert plan.statement_count == 0
    desired = desired_mod.from_spec(compute_spec, privileged_role=PRIVILEGED)
    assert not drift.report(desired, catalog)


def test_md5_rename_is_followed_by_setting_the_password() -> None:
    old_hash = "md5" + md5_hash("p", "old")
    catalog = with_roles(
        base_catalog(), model.RoleInfo("old", 20000, login=True, password=old_hash)
    )
    plan = plan_for(
        make_spec(
            roles=[role("new", md5_hash("p", "new"))],
            deltas=[delta("rename_role", "old", "new")],
        ),
        catalog,
    )
    assert [op.render() for op in plan] == [
        'ALTER ROLE "old" RENAME TO "new"',
        "ALTER ROLE \"new\" WITH PASSWORD '<redacted>'",
    ]
    real = plan.operations[1].statements[0].as_string(None)
    assert real == f"ALTER ROLE \"new\" WITH PASSWORD 'md5{md5_hash('p', 'new')}'"


def test_deltas_are_applied_in_order_against_the_simulated_catalog() -> None:
    catalog = base_catalog().with_database(model.DatabaseInfo("a", 30000, "cloud_admin"))
    plan = plan_for(
        make_spec(
            deltas=[
                delta("rename_db", "a", "b"),
                delta("rename_db", "b", "c"),
                delta("delete_db", "a"),  # gone by now: nothing
                delta("delete_db", "c"),
            ]
        ),
        catalog,
    )
    assert [op.render() for op in plan] == [
        'ALTER DATABASE "a" RENAME TO "b"',
        'ALTER DATABASE "b" RENAME TO "c"',
        'DROP DATABASE IF EXISTS "c" WITH (FORCE)',
    ]


def test_deleted_role_references_follow_pg_shdepend() -> None:
    catalog = with_roles(
        base_catalog(),
        model.RoleInfo("owner", 20000),
        model.RoleInfo("leaver", 20001),
    )
    catalog = catalog.with_database(model.DatabaseInfo("mine", 30000, "leaver"))
    catalog = catalog.with_database(model.DatabaseInfo("theirs", 30001, "owner"))
    catalog = catalog.with_database(
        model.DatabaseInfo("closed", 30002, "owner", allow_connections=False)
    )
    catalog = dataclasses.replace(catalog, references={20001: frozenset({0, 30000, 30001, 30002})})
    plan = plan_for(make_spec(deltas=[delta("delete_role", "leaver")]), catalog)

    def ends(op: plan_mod.Operation) -> tuple[str, str]:
        return op.statements[0].as_string(None), op.statements[-1].as_string(None)

    drop_owned = 'DROP OWNED BY "leaver"'
    assert [(op.phase, op.database, ends(op)) for op in plan] == [
        (
            # Shared references (0): first and alone, on the maintenance session.
            Phase.DELETE_ROLE_SHARED_REFERENCES,
            None,
            ('REASSIGN OWNED BY "leaver" TO "cloud_admin"', drop_owned),
        ),
        (
            Phase.PER_DATABASE,
            "mine",  # the role owns the database itself: hand it to the superuser
            ('REASSIGN OWNED BY "leaver" TO "cloud_admin"', drop_owned),
        ),
        (Phase.PER_DATABASE, "theirs", ('REASSIGN OWNED BY "leaver" TO "owner"', drop_owned)),
        (Phase.DROP_ROLES, None, ('DROP ROLE IF EXISTS "leaver"',) * 2),
    ]
    # Between them, privileges other grantors gave the role are revoked (as the grantor).
    release = plan.operations[1].statements
    assert release[1].as_string(None) == (
        "SELECT pg_catalog.set_config('compute_ctl.deleting_role', 'leaver', true)"
    )
    assert "REVOKE ALL PRIVILEGES ON TABLE" in release[2].as_string(None)


def test_shared_references_only_use_the_maintenance_database() -> None:
    catalog = with_roles(base_catalog(), model.RoleInfo("grantee", 20001))
    catalog = dataclasses.replace(catalog, references={20001: frozenset({0})})
    plan = plan_for(make_spec(deltas=[delta("delete_role", "grantee")]), catalog)
    assert [(op.database, op.obj) for op in plan] == [
        (None, "role 'grantee' in database 'postgres'"),
        (None, "role 'grantee'"),
    ]


def test_invalid_database_dropped_before_anything_else() -> None:
    catalog = base_catalog().with_database(
        model.DatabaseInfo("broken", 30000, "cloud_admin", connlimit=model.INVALID_CONNLIMIT)
    )
    plan = plan_for(make_spec(), catalog)
    assert [(op.phase, op.render(), op.transactional) for op in plan] == [
        (Phase.DROP_INVALID_DATABASES, 'DROP DATABASE IF EXISTS "broken"', False)
    ]


def test_pg_stat_statements_only_when_preloaded_and_missing() -> None:
    assert not plan_for(make_spec(), base_catalog(preloaded=frozenset()))
    missing = base_catalog(extensions=frozenset())
    (op,) = plan_for(make_spec(), missing)
    assert op.phase is Phase.EXTENSIONS
    assert op.database is None
    assert op.render() == 'CREATE EXTENSION IF NOT EXISTS "pg_stat_statements" WITH SCHEMA public'


def test_pre_15_databases_hand_schema_public_to_the_owner() -> None:
    catalog = with_roles(base_catalog(server_version=140000), model.RoleInfo("app", 20000))
    plan = plan_for(make_spec(roles=[role("app")], databases=[database("db", "app")]), catalog)
    (per_db,) = plan.phase(Phase.PER_DATABASE)
    assert per_db.statements[0].as_string(None) == 'ALTER SCHEMA public OWNER TO "app"'


def test_passwords_are_stored_as_postgres_would() -> None:
    verifier = scram_verifier("pw")
    assert desired_mod.stored_password(spec.Role(name="r", encrypted_password=verifier)) == verifier
    upper = md5_hash("p", "r").upper()
    assert desired_mod.stored_password(spec.Role(name="r", encrypted_password=upper)) == (
        "md5" + upper.lower()
    )
    assert desired_mod.stored_password(spec.Role(name="r")) is None
    for bad in ("hunter2", "md5" + md5_hash("p", "r"), "SCRAM-SHA-256$x", verifier + "x"):
        with pytest.raises(errors.ConfigError, match="role 'r'"):
            desired_mod.stored_password(spec.Role(name="r", encrypted_password=bad))


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2030-01-01", "2030-01-01T00:00:00+00:00"),
        ("2030-01-01T02:00:00+02:00", "2030-01-01T00:00:00+00:00"),
        ("2030-01-01 00:00:00+00", "2030-01-01T00:00:00+00:00"),
        ("Infinity", "infinity"),
    ],
)
def test_valid_until_is_normalised(given: str, stored: str) -> None:
    attrs = desired_mod.parse_role_options(
        "r", [spec.GenericOption(name="valid until", value=given, vartype="string")]
    )
    assert attrs.valid_until == stored


def test_role_options_are_whitelisted_and_case_insensitive() -> None:
    attrs = desired_mod.parse_role_options(
        "r",
        [
            spec.GenericOption(name="nocreatedb", vartype="bool"),
            spec.GenericOption(name="Connection  Limit", value="3", vartype="integer"),
            spec.GenericOption(name="NOLOGIN", vartype="bool"),
        ],
    )
    assert attrs == desired_mod.RoleAttrs(createdb=False, connlimit=3, login=False)
    with pytest.raises(errors.ConfigError, match="not a supported role option"):
        desired_mod.parse_role_options("r", [spec.GenericOption(name="IN ROLE x", vartype="x")])


def test_operation_json_shape_and_redaction() -> None:
    catalog = base_catalog()
    verifier = scram_verifier("x")
    plan = plan_for(make_spec(roles=[role("r", verifier)]), catalog)
    (item,) = plan.to_json()
    assert set(item) == {"phase", "database", "sql", "comment"}
    assert verifier not in item["sql"]
    assert verifier in plan.operations[0].statements[0].as_string(None)


def test_neon_extension_only_when_available_and_only_what_differs() -> None:
    def neon(installed: str | None = None, schema: str | None = None) -> model.ExtensionInfo:
        return model.ExtensionInfo("neon", "1.6", installed_version=installed, schema=schema)

    assert not plan_for(make_spec(), base_catalog(neon_extension=None))  # vanilla
    assert not plan_for(make_spec(), base_catalog(neon_extension=neon("1.6", "neon")))
    cases = {
        None: ['CREATE EXTENSION IF NOT EXISTS "neon" WITH SCHEMA "neon"'],
        ("1.5", "neon"): ['ALTER EXTENSION "neon" UPDATE'],
        ("1.6", "public"): [
            "UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname = 'neon'",
            'ALTER EXTENSION "neon" SET SCHEMA "neon"',
        ],
        ("1.5", "public"): [
            "UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname = 'neon'",
            'ALTER EXTENSION "neon" SET SCHEMA "neon"',
            'ALTER EXTENSION "neon" UPDATE',
        ],
    }
    for state, statements in cases.items():
        extension = neon() if state is None else neon(*state)
        (op,) = plan_for(make_spec(), base_catalog(neon_extension=extension))
        assert (op.phase, op.database) == (Phase.NEON_EXTENSION, None)
        assert [s.as_string(None) for s in op.statements] == statements
    # A missing schema neon is created first (its own phase, earlier).
    plan = plan_for(make_spec(), base_catalog(neon_schema=False, neon_extension=neon()))
    assert [op.phase for op in plan] == [Phase.CREATE_SCHEMA_NEON, Phase.NEON_EXTENSION]


def test_subscription_drop_once_per_timeline() -> None:
    catalog = with_roles(base_catalog(), model.RoleInfo("o", 20000, login=True))
    for name, oid, subs in (("a", 30000, ("s1", "s 2")), ("b", 30001, ())):
        catalog = catalog.with_database(
            model.DatabaseInfo(
                name, oid, "o", privileged_grant=True, default_privileges=True, subscriptions=subs
            )
        )
    spec_of = {
        timeline: make_spec(
            roles=[role("o")],
            databases=[database("a", "o"), database("b", "o")],
            drop_subscriptions_before_start=True,
            timeline_id=timeline or None,
        )
        for timeline in ("", "ab" * 16)
    }
    plan = plan_for(spec_of[""], catalog)
    assert [(op.phase, op.database) for op in plan] == [
        (Phase.PER_DATABASE, "a"),  # b has none: no session
        (Phase.FINALIZE_DROP_SUBSCRIPTIONS, None),
    ]
    assert [s.as_string(None) for s in plan.operations[0].statements[-3:]] == [
        'ALTER SUBSCRIPTION "s 2" DISABLE',
        'ALTER SUBSCRIPTION "s 2" SET (slot_name = NONE)',
        'DROP SUBSCRIPTION "s 2"',
    ]
    assert (
        plan.operations[1]
        .statements[1]
        .as_string(None)
        .endswith(
            "VALUES (1, '') ON CONFLICT (id) DO UPDATE SET timeline_id = EXCLUDED.timeline_id"
        )
    )
    done = dataclasses.replace(catalog, subscriptions_dropped=frozenset({""}))
    assert not plan_for(spec_of[""], done)
    # A new branch (another timeline) drops what it inherited.
    assert len(plan_for(spec_of["ab" * 16], done)) == 2
    # Without the flag nothing is planned, done or not.
    assert not plan_for(make_spec(roles=[role("o")], databases=[database("a", "o")]), catalog)
