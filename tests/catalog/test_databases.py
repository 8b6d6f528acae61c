"""Database phases against a real PostgreSQL: invalid databases, renames, deletes with
active sessions, templates and subscriptions, create and alter, and per-database work."""

from __future__ import annotations

import psycopg
import pytest

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
    option,
    owner_of_database,
    replan,
    role,
    user_databases,
)

pytestmark = pytest.mark.postgres

Phase = plan_mod.Phase


def privileges_of(dsn: str, dbname: str, grantee: str) -> set[str]:
    rows = fetch(
        dsn,
        "select a.privilege_type from pg_database d, aclexplode(d.datacl) a "
        "join pg_roles r on r.oid = a.grantee where d.datname = %s and r.rolname = %s",
        [dbname, grantee],
    )
    return {r[0] for r in rows}


async def test_create_databases_with_options_grant_and_default_privileges(
    pgc: pgserver.PgServer,
) -> None:
    compute_spec = make_spec(
        roles=[role("owner1")],
        databases=[
            database(
                "app",
                "owner1",
                [
                    option("TEMPLATE", "template0"),
                    option("ENCODING", "UTF8"),
                    option("CONNECTION LIMIT", "7", "integer"),
                ],
            )
        ],
    )
    plan = await replan(pgc, compute_spec)
    assert [(op.phase, op.database) for op in plan.phase(Phase.CREATE_AND_ALTER_DATABASES)] == [
        (Phase.CREATE_AND_ALTER_DATABASES, None),
        (Phase.CREATE_AND_ALTER_DATABASES, None),
    ]
    assert plan.phase(Phase.CREATE_AND_ALTER_DATABASES)[0].render() == (
        "CREATE DATABASE \"app\" WITH OWNER \"owner1\" TEMPLATE 'template0' ENCODING 'UTF8' "
        "CONNECTION LIMIT 7"
    )
    assert [op.database for op in plan.phase(Phase.PER_DATABASE)] == ["app"]
    await apply(pgc, compute_spec)
    dsn = pgc.dsn()
    assert owner_of_database(dsn, "app") == "owner1"
    assert fetch(dsn, "select datconnlimit from pg_database where datname = 'app'") == [(7,)]
    assert privileges_of(dsn, "app", PRIVILEGED) == {"CREATE", "CONNECT", "TEMPORARY"}
    defaults = fetch(
        pgc.dsn("app"),
        "select d.defaclobjtype::text, d.defaclacl::text from pg_default_acl d "
        "join pg_namespace n on n.oid = d.defaclnamespace where n.nspname = 'public' "
        "order by 1",
    )
    assert [t for t, _ in defaults] == ["S", "r"]
    assert all(f"{PRIVILEGED}=" in acl and "*" in acl for _, acl in defaults)
    # PostgreSQL 15+: schema public follows the database owner by itself.
    assert fetch(
        pgc.dsn("app"), "select nspowner::regrole::text from pg_namespace where nspname = 'public'"
    ) == [("pg_database_owner",)]
    assert not await replan(pgc, compute_spec)


async def test_alter_owner_options_and_missing_grant(pgc: pgserver.PgServer) -> None:
    execute(pgc.dsn(), "CREATE ROLE before_owner", "CREATE DATABASE outside OWNER before_owner")
    compute_spec = make_spec(
        roles=[role("after_owner")],
        databases=[
            database(
                "outside",
                "after_owner",
                [option("CONNECTION LIMIT", "3", "integer"), option("IS_TEMPLATE", "true", "bool")],
            )
        ],
    )
    plan = await replan(pgc, compute_spec)
    assert [op.comment for op in plan.phase(Phase.CREATE_AND_ALTER_DATABASES)] == [
        "alter database 'outside': owner",
        "alter database 'outside': options",
        "alter database 'outside': grant",
    ]
    await apply(pgc, compute_spec)
    assert owner_of_database(pgc.dsn(), "outside") == "after_owner"
    assert fetch(
        pgc.dsn(), "select datconnlimit, datistemplate from pg_database where datname = 'outside'"
    ) == [(3, True)]
    assert privileges_of(pgc.dsn(), "outside", PRIVILEGED) == {"CREATE", "CONNECT", "TEMPORARY"}
    assert not await replan(pgc, compute_spec)


async def test_drop_invalid_database_then_recreate(pgc: pgserver.PgServer) -> None:
    compute_spec = make_spec(roles=[role("o")], databases=[database("flaky", "o")])
    await apply(pgc, compute_spec)
    # What an interrupted DROP DATABASE leaves behind.
    execute(pgc.dsn(), "UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'flaky'")
    plan = await replan(pgc, compute_spec)
    phases = [(op.phase, op.comment) for op in plan]
    assert phases[0] == (Phase.DROP_INVALID_DATABASES, "drop invalid database 'flaky'")
    assert (Phase.CREATE_AND_ALTER_DATABASES, "create database 'flaky'") in phases
    await apply(pgc, compute_spec)
    assert fetch(pgc.dsn(), "select datconnlimit from pg_database where datname = 'flaky'") == [
        (-1,)
    ]
    assert not await replan(pgc, compute_spec)


async def test_rename_database_guarded_by_existence(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("o")], databases=[database("before", "o")]))
    renamed = make_spec(
        roles=[role("o")],
        databases=[database("after", "o")],
        deltas=[delta("rename_db", "before", "after")],
    )
    plan = await replan(pgc, renamed)
    assert [(op.phase, op.comment) for op in plan] == [
        (Phase.RENAME_AND_DELETE_DATABASES, "rename database 'before' to 'after'")
    ]
    await apply(pgc, renamed)
    assert user_databases(pgc.dsn()) == {"after"}
    assert not await replan(pgc, renamed)


async def test_delete_database_with_an_active_session(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("o")], databases=[database("busy", "o")]))
    with psycopg.connect(pgc.dsn("busy"), autocommit=True) as session:
        session.execute("select 1")
        deleting = make_spec(roles=[role("o")], deltas=[delta("delete_db", "busy")])
        plan = await replan(pgc, deleting)
        assert [op.render() for op in plan] == ['DROP DATABASE IF EXISTS "busy" WITH (FORCE)']
        await apply(pgc, deleting)
        with pytest.raises(psycopg.OperationalError):
            session.execute("select 1")  # FORCE terminated it
    assert user_databases(pgc.dsn()) == set()
    assert not await replan(pgc, deleting)


async def test_delete_template_database_with_subscriptions(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("o")], databases=[database("subscriber", "o")]))
    execute(
        pgc.dsn("subscriber"),
        "CREATE SUBSCRIPTION sub_a CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' "
        "PUBLICATION pub WITH (connect = false)",
        'CREATE SUBSCRIPTION "sub ""b" CONNECTION \'host=127.0.0.1 port=1 dbname=nowhere\' '
        "PUBLICATION pub WITH (connect = false, slot_name = 'some_slot')",
    )
    # The control: PostgreSQL refuses to drop a database that has subscriptions.
    with pytest.raises(psycopg.errors.ObjectInUse):
        execute(pgc.dsn(), "DROP DATABASE subscriber WITH (FORCE)")
    execute(pgc.dsn(), "ALTER DATABASE subscriber IS_TEMPLATE true")
    deleting = make_spec(roles=[role("o")], deltas=[delta("delete_db", "subscriber")])
    plan = await replan(pgc, deleting)
    first, clear_template, drop = plan.operations
    assert first.database == "subscriber"
    assert first.phase is Phase.RENAME_AND_DELETE_DATABASES
    assert first.statements[0].as_string(None).startswith("LOCK TABLE pg_catalog.pg_subscription")
    assert [s.as_string(None) for s in first.statements[1:4]] == [
        'ALTER SUBSCRIPTION "sub ""b" DISABLE',
        'ALTER SUBSCRIPTION "sub ""b" SET (slot_name = NONE)',
        'DROP SUBSCRIPTION "sub ""b"',
    ]
    assert clear_template.render() == 'ALTER DATABASE "subscriber" IS_TEMPLATE false'
    assert drop.render() == 'DROP DATABASE IF EXISTS "subscriber" WITH (FORCE)'
    await apply(pgc, deleting)
    assert user_databases(pgc.dsn()) == set()
    assert fetch(pgc.dsn(), "select count(*) from pg_subscription") == [(0,)]
    assert not await replan(pgc, deleting)


async def test_delete_role_owning_objects_in_several_databases(pgc: pgserver.PgServer) -> None:
    """REASSIGN OWNED to each database's owner and DROP OWNED, then DROP ROLE, in every
    database holding something of the role, including one outside the spec."""
    base = make_spec(
        roles=[role("owner1"), role("owner2"), role("leaver")],
        databases=[database("db1", "owner1"), database("db2", "owner2"), database("db3", "owner1")],
    )
    await apply(pgc, base)
    execute(pgc.dsn(), "CREATE DATABASE unmanaged OWNER owner2")
    for dbname in ("db1", "db2", "unmanaged"):
        execute(
            pgc.dsn(dbname),
            "GRANT CREATE ON SCHEMA public TO leaver",
            "SET ROLE leaver",
            "CREATE TABLE public.mine (id int)",
            "CREATE SEQUENCE public.myseq",
        )
    execute(
        pgc.dsn("db3"),
        "SET ROLE owner1",
        "CREATE TABLE public.theirs (id int)",
        "GRANT SELECT, INSERT ON public.theirs TO leaver",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO leaver",
    )
    execute(pgc.dsn(), "GRANT CONNECT ON DATABASE db3 TO leaver")
    # The control: PostgreSQL refuses to drop it as is.
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        execute(pgc.dsn(), "DROP ROLE leaver")

    deleting = make_spec(
        roles=[role("owner1"), role("owner2")],
        databases=[database("db1", "owner1"), database("db2", "owner2"), database("db3", "owner1")],
        deltas=[delta("delete_role", "leaver")],
    )
    plan = await replan(pgc, deleting)
    per_db = plan.phase(Phase.PER_DATABASE)
    assert sorted(op.database or "" for op in per_db) == ["db1", "db2", "db3", "unmanaged"]
    by_db = {op.database: [s.as_string(None) for s in op.statements] for op in per_db}
    assert by_db["db1"][0] == 'REASSIGN OWNED BY "leaver" TO "owner1"'
    assert by_db["db2"][0] == 'REASSIGN OWNED BY "leaver" TO "owner2"'
    assert all(statements[-1] == 'DROP OWNED BY "leaver"' for statements in by_db.values())
    # The CONNECT on db3 is a shared dependency: handled once, before the concurrent work.
    (shared,) = plan.phase(Phase.DELETE_ROLE_SHARED_REFERENCES)
    assert shared.database is None
    assert [op.phase for op in plan][-1] is Phase.DROP_ROLES

    result = await apply(pgc, deleting, concurrency=2)
    assert result.statements_executed == plan.statement_count
    assert fetch(pgc.dsn(), "select 1 from pg_roles where rolname = 'leaver'") == []
    for dbname, owner in (("db1", "owner1"), ("db2", "owner2"), ("unmanaged", "owner2")):
        assert fetch(
            pgc.dsn(dbname),
            "select relname, relowner::regrole::text from pg_class "
            "where relname in ('mine', 'myseq') order by 1",
        ) == [("mine", owner), ("myseq", owner)]
    assert not await replan(pgc, deleting)


async def test_per_database_work_skips_databases_already_done(pgc: pgserver.PgServer) -> None:
    """A re-apply opens no per-database session: done-ness is read from shared catalogs."""
    compute_spec = make_spec(
        roles=[role("o")], databases=[database(f"d{i}", "o") for i in range(3)]
    )
    await apply(pgc, compute_spec)
    # A database made outside compute_ctl and then added to the spec gets its schema work.
    execute(pgc.dsn(), "CREATE DATABASE late OWNER o")
    with_late = make_spec(
        roles=[role("o")],
        databases=[*(database(f"d{i}", "o") for i in range(3)), database("late", "o")],
    )
    plan = await replan(pgc, with_late)
    assert [(op.phase, op.database) for op in plan] == [
        (Phase.CREATE_AND_ALTER_DATABASES, None),
        (Phase.PER_DATABASE, "late"),
    ]
    await apply(pgc, with_late)
    assert not await replan(pgc, with_late)


async def test_schema_public_owned_by_the_superuser_goes_to_the_owner(
    pgc: pgserver.PgServer,
) -> None:
    execute(pgc.dsn(), "CREATE ROLE o", "CREATE DATABASE legacy OWNER o")
    execute(pgc.dsn("legacy"), "ALTER SCHEMA public OWNER TO cloud_admin")
    compute_spec = make_spec(roles=[role("o")], databases=[database("legacy", "o")])
    plan = await replan(pgc, compute_spec)
    (per_db,) = plan.phase(Phase.PER_DATABASE)
    assert per_db.statements[0].as_string(None) == 'ALTER SCHEMA public OWNER TO "o"'
    await apply(pgc, compute_spec)
    assert fetch(
        pgc.dsn("legacy"),
        "select nspowner::regrole::text from pg_namespace where nspname = 'public'",
    ) == [("o",)]
    assert not await replan(pgc, compute_spec)


async def test_databases_created_concurrently_and_template_copies_wait(
    pgc: pgserver.PgServer,
) -> None:
    """Creates overlap on several sessions, but a database copying a template this very
    apply creates waits for it (a barrier in the plan)."""
    compute_spec = make_spec(
        roles=[role("o")],
        databases=[
            database("tmpl", "o"),
            database("copy", "o", [option("TEMPLATE", "tmpl")]),
            *(database(f"par{i}", "o") for i in range(5)),
        ],
    )
    plan = await replan(pgc, compute_spec)
    keys = [op.key for op in plan.phase(Phase.CREATE_AND_ALTER_DATABASES)]
    assert keys == ["tmpl", "tmpl", None, None, *[f"par{i // 2}" for i in range(10)]]
    result = await apply(pgc, compute_spec, concurrency=4)
    assert result.statements_executed == plan.statement_count
    assert user_databases(pgc.dsn()) == {"tmpl", "copy", *(f"par{i}" for i in range(5))}
    for name in user_databases(pgc.dsn()):
        assert privileges_of(pgc.dsn(), name, PRIVILEGED) == {"CREATE", "CONNECT", "TEMPORARY"}
    assert not await replan(pgc, compute_spec)
