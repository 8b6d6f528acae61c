"""Role phases against a real PostgreSQL: the privileged role, create and alter, renames,
passwords (SCRAM verbatim, md5 prefixed, NULL), and the extension phase."""

from __future__ import annotations

import time

import psycopg
import pytest

from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver
from tests.catalog.conftest import (
    PRIVILEGED,
    apply,
    delta,
    execute,
    fetch,
    make_spec,
    md5_hash,
    option,
    password_of,
    replan,
    role,
    scram_verifier,
)

pytestmark = pytest.mark.postgres

Phase = plan_mod.Phase


def attributes(dsn: str, name: str) -> dict[str, object]:
    rows = fetch(
        dsn,
        "select rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
        "rolbypassrls, rolconnlimit, rolvaliduntil::text from pg_roles where rolname = %s",
        [name],
    )
    assert rows, name
    keys = (
        *("superuser", "inherit", "createrole", "createdb", "login", "replication"),
        *("bypassrls", "connlimit", "valid_until"),
    )
    return dict(zip(keys, rows[0], strict=True))


def createrole_default(dsn: str) -> bool:
    """Whether Neon's create-time CREATEROLE applies here: only from PostgreSQL 16 on."""
    return int(fetch(dsn, "show server_version_num")[0][0]) >= 160000


def member_of(dsn: str, name: str) -> set[str]:
    rows = fetch(
        dsn,
        "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid "
        "join pg_roles r on r.oid = m.member where r.rolname = %s",
        [name],
    )
    return {r[0] for r in rows}


async def test_privileged_role_and_pg_stat_statements_once(pgc: pgserver.PgServer) -> None:
    empty = make_spec(databases=[])
    first = await apply(pgc, empty)
    assert [op.phase for op in first.plan] == [
        Phase.CREATE_PRIVILEGED_ROLE,
        Phase.CREATE_SCHEMA_NEON,
        Phase.EXTENSIONS,
        Phase.AVAILABILITY_CHECK,
    ]
    attrs = attributes(pgc.dsn(), PRIVILEGED)
    assert attrs["createdb"]
    assert attrs["createrole"] is createrole_default(pgc.dsn())
    assert attrs["replication"]
    assert attrs["bypassrls"]
    assert not attrs["login"]
    assert not attrs["superuser"]
    assert member_of(pgc.dsn(), PRIVILEGED) == {"pg_read_all_data", "pg_write_all_data"}
    # pg_stat_statements is preloaded by the test server: installed in postgres only.
    assert fetch(
        pgc.dsn(),
        "select extnamespace::regnamespace::text from pg_extension "
        "where extname = 'pg_stat_statements'",
    ) == [("public",)]
    second = await apply(pgc, empty)
    assert not second.plan
    assert second.statements_executed == 0


async def test_create_roles_with_options_and_passwords(pgc: pgserver.PgServer) -> None:
    verifier = scram_verifier("s3cret")
    bare_md5 = md5_hash("pw", "md5user")
    compute_spec = make_spec(
        roles=[
            role("scram", verifier),
            role("md5user", bare_md5.upper()),  # PostgreSQL only recognises lower-case hex
            role("nopass"),
            role(
                "limited",
                None,
                [
                    option("NOCREATEDB", vartype="bool"),
                    option("CONNECTION LIMIT", "5", "integer"),
                    option("VALID UNTIL", "2031-02-03T04:05:06+00:00"),
                ],
            ),
            role("jwt_user"),
        ],
        local_proxy_config={"jwks": [{"id": "1", "role_names": ["jwt_user"]}]},
    )
    result = await apply(pgc, compute_spec)
    assert result.statements_executed == result.plan.statement_count
    dsn = pgc.dsn()
    assert password_of(dsn, "scram") == verifier  # verbatim, not re-hashed
    assert password_of(dsn, "md5user") == "md5" + bare_md5
    assert password_of(dsn, "nopass") is None
    console = attributes(dsn, "scram")
    assert console["login"]
    assert console["createrole"] is createrole_default(dsn)
    assert console["createdb"]
    assert console["replication"]
    assert console["bypassrls"]
    assert console["inherit"]
    assert member_of(dsn, "scram") == {PRIVILEGED}
    limited = attributes(dsn, "limited")
    assert not limited["createdb"]
    assert limited["createrole"] is createrole_default(dsn)
    assert limited["connlimit"] == 5
    assert limited["valid_until"] == "2031-02-03 04:05:06+00"
    plain = attributes(dsn, "jwt_user")
    assert plain["login"]
    assert not plain["createrole"]
    assert not plain["replication"]
    assert member_of(dsn, "jwt_user") == set()
    assert not await replan(pgc, compute_spec)


async def test_alter_changes_only_what_differs(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("app", md5_hash("a", "app"))]))
    changed = make_spec(
        roles=[role("app", scram_verifier("b"), [option("CONNECTION LIMIT", "3", "integer")])]
    )
    plan = await replan(pgc, changed)
    assert [(op.phase, op.obj) for op in plan] == [(Phase.CREATE_AND_ALTER_ROLES, "role 'app'")]
    assert plan.operations[0].comment == "alter role 'app': connlimit, password"
    rendered = plan.to_json()[0]["sql"]
    assert rendered == "ALTER ROLE \"app\" WITH CONNECTION LIMIT 3 PASSWORD '<redacted>'"
    await apply(pgc, changed)
    assert password_of(pgc.dsn(), "app") == scram_verifier("b")
    # A null password clears the stored one, once.
    cleared = make_spec(roles=[role("app", None, [option("CONNECTION LIMIT", "3", "integer")])])
    plan = await replan(pgc, cleared)
    assert plan.to_json()[0]["sql"] == 'ALTER ROLE "app" WITH PASSWORD NULL'
    await apply(pgc, cleared)
    assert password_of(pgc.dsn(), "app") is None
    assert not await replan(pgc, cleared)


async def test_existing_role_keeps_attributes_the_spec_does_not_state(
    pgc: pgserver.PgServer,
) -> None:
    execute(pgc.dsn(), "CREATE ROLE outsider NOLOGIN NOCREATEDB NOREPLICATION")
    compute_spec = make_spec(roles=[role("outsider")])
    plan = await replan(pgc, compute_spec)
    assert [op.comment for op in plan.phase(Phase.CREATE_AND_ALTER_ROLES)] == [
        "alter role 'outsider': login"
    ]
    await apply(pgc, compute_spec)
    attrs = attributes(pgc.dsn(), "outsider")
    assert attrs["login"]
    assert not attrs["createdb"]
    assert not attrs["replication"]
    assert member_of(pgc.dsn(), "outsider") == set()


async def test_rename_role_sets_the_md5_password_again(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("old_name", md5_hash("pw", "old_name"))]))
    renamed = make_spec(
        roles=[role("new_name", md5_hash("pw", "new_name"))],
        deltas=[delta("rename_role", "old_name", "new_name")],
    )
    plan = await replan(pgc, renamed)
    assert [(op.phase, op.comment) for op in plan] == [
        (Phase.RENAME_ROLES, "rename role 'old_name' to 'new_name'"),
        # PostgreSQL clears an md5 password on rename: the planner knows and sets it.
        (Phase.CREATE_AND_ALTER_ROLES, "alter role 'new_name': password"),
    ]
    await apply(pgc, renamed)
    assert password_of(pgc.dsn(), "new_name") == "md5" + md5_hash("pw", "new_name")
    assert fetch(pgc.dsn(), "select 1 from pg_roles where rolname = 'old_name'") == []
    # The delta replayed (the spec is re-sent as is) plans nothing.
    assert not await replan(pgc, renamed)


async def test_rename_keeps_scram_and_skips_when_target_exists(pgc: pgserver.PgServer) -> None:
    verifier = scram_verifier("x")
    await apply(pgc, make_spec(roles=[role("a", verifier), role("b")]))
    # Both exist: the rename is skipped instead of failing.
    both = make_spec(
        roles=[role("a", verifier), role("b")], deltas=[delta("rename_role", "a", "b")]
    )
    assert not await replan(pgc, both)
    only_new = make_spec(roles=[role("c", verifier)], deltas=[delta("rename_role", "a", "c")])
    plan = await replan(pgc, only_new)
    assert [op.phase for op in plan] == [Phase.RENAME_ROLES]  # SCRAM survives a rename
    await apply(pgc, only_new)
    assert password_of(pgc.dsn(), "c") == verifier


async def test_delete_role_guarded_by_existence(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("gone")]))
    deleting = make_spec(deltas=[delta("delete_role", "gone"), delta("delete_role", "never")])
    plan = await replan(pgc, deleting)
    assert [(op.phase, op.obj) for op in plan] == [(Phase.DROP_ROLES, "role 'gone'")]
    await apply(pgc, deleting)
    assert fetch(pgc.dsn(), "select 1 from pg_roles where rolname = 'gone'") == []
    assert not await replan(pgc, deleting)


async def test_applied_passwords_really_authenticate(pgc: pgserver.PgServer) -> None:
    """The stored SCRAM verifier and md5 hash accept the password they were made from."""
    await apply(
        pgc,
        make_spec(
            roles=[
                role("scram_login", scram_verifier("open sesame")),
                role("md5_login", md5_hash("md5 sesame", "md5_login")),
            ]
        ),
    )
    hba = pgc.datadir / "pg_hba.conf"
    original = hba.read_text()
    rules = "".join(
        f"host all {name} 127.0.0.1/32 {method}\n"
        for name, method in (("scram_login", "scram-sha-256"), ("md5_login", "md5"))
    )
    hba.write_text(rules + original)
    try:
        execute(pgc.dsn(), "select pg_reload_conf()")
        wait_until_password_required(pgc, "scram_login")
        for name, password in (("scram_login", "open sesame"), ("md5_login", "md5 sesame")):
            with psycopg.connect(pgc.dsn(user=name), password=password) as conn:
                assert conn.execute("select current_user").fetchone() == (name,)
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(pgc.dsn(user=name), password="wrong").close()
    finally:
        hba.write_text(original)
        execute(pgc.dsn(), "select pg_reload_conf()")


def wait_until_password_required(server: pgserver.PgServer, user: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(server.dsn(user=user), password="wrong").close()
        except psycopg.OperationalError:
            return
        assert time.monotonic() < deadline, "pg_hba.conf reload did not take effect"
        time.sleep(0.01)


async def test_spec_roles_cannot_reach_server_program_execution(pgc: pgserver.PgServer) -> None:
    """Issue 12 item 5: before 16, CREATEROLE let a spec role grant itself
    pg_execute_server_program and run OS commands with COPY ... FROM PROGRAM."""
    await apply(pgc, make_spec(roles=[role("attacker", scram_verifier("pw"))]))
    attacker = psycopg.conninfo.make_conninfo(pgc.dsn(), user="attacker")
    with psycopg.connect(attacker, autocommit=True) as conn:
        conn.execute("create temp table loot (line text)")
        for prefix in ("", "set role neon_superuser; "):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(prefix + "grant pg_execute_server_program to attacker")
            conn.execute("reset role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("copy loot from program 'id'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create role helper createrole")
    assert "attacker" not in {
        r[0]
        for r in fetch(
            pgc.dsn(),
            "select m.rolname from pg_auth_members a join pg_roles g on g.oid = a.roleid "
            "join pg_roles m on m.oid = a.member where g.rolname = 'pg_execute_server_program'",
        )
    }
