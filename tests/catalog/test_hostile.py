"""Hostile input against a real PostgreSQL: names that break naive quoting round-trip
exactly, and per-database/per-role settings cannot hijack our sessions."""

from __future__ import annotations

import ast
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from compute_ctl.compute import errors, monitor, pgsession
from compute_ctl.compute.catalog import apply as catalog_apply
from compute_ctl.compute.catalog import db, ondemand, schema_dump
from compute_ctl.compute.catalog import plan as plan_mod
from compute_ctl.compute.http import readiness
from compute_ctl.compute.vm_monitor import filecache
from tests import pgserver
from tests.catalog.conftest import (
    PRIVILEGED,
    database,
    delta,
    dsn_of,
    execute,
    fetch,
    make_spec,
    md5_hash,
    owner_of_database,
    password_of,
    role,
    scram_verifier,
    user_databases,
    user_roles,
)

pytestmark = pytest.mark.postgres

HOSTILE_NAMES = [
    'quo"te',
    "single'quote",
    "back\\slash",
    "semi;colon; DROP ROLE cloud_admin; --",
    "percent %s %(x)s {}",
    "$dollar$ $$",
    "ünïcødé 🐘 名前",
    "trailing space ",
    "UPPER lower",
    "x" * 63,
    "é" * 31 + "x",  # 63 bytes in UTF-8
    '\\\\\'"";',
]


async def test_hostile_names_round_trip_exactly(pgc: pgserver.PgServer) -> None:
    roles = [role(name, md5_hash("pw", name)) for name in HOSTILE_NAMES]
    databases = [database(name, HOSTILE_NAMES[i - 1]) for i, name in enumerate(HOSTILE_NAMES)]
    compute_spec = make_spec(roles=roles, databases=databases)
    result = await catalog_apply.apply_spec(
        connstr=pgc.dsn(), spec=compute_spec, privileged_role=PRIVILEGED, concurrency=4
    )
    assert result.statements_executed > 0
    dsn = pgc.dsn()
    assert user_roles(dsn) == {*HOSTILE_NAMES, PRIVILEGED}
    assert user_databases(dsn) == set(HOSTILE_NAMES)
    for i, name in enumerate(HOSTILE_NAMES):
        assert password_of(dsn, name) == "md5" + md5_hash("pw", name)
        assert owner_of_database(dsn, name) == HOSTILE_NAMES[i - 1]
    # Each database got its per-database work (its session found it by exact name).
    assert all(
        op.database in HOSTILE_NAMES for op in result.plan.phase(plan_mod.Phase.PER_DATABASE)
    )
    assert not await catalog_apply.plan_spec(
        connstr=dsn, spec=compute_spec, privileged_role=PRIVILEGED
    )

    # Renames and deletes of hostile names, replayed safely.
    renamed = [name + "!" if len(name.encode()) < 63 else name[:-1] + "!" for name in HOSTILE_NAMES]
    deltas = [delta("rename_role", o, n) for o, n in zip(HOSTILE_NAMES, renamed, strict=True)]
    deltas += [delta("delete_db", name) for name in HOSTILE_NAMES]
    deltas += [delta("delete_role", name) for name in renamed[:3]]
    second = make_spec(roles=[role(n, scram_verifier(n)) for n in renamed[3:]], deltas=deltas)
    await catalog_apply.apply_spec(
        connstr=dsn, spec=second, privileged_role=PRIVILEGED, concurrency=4
    )
    assert user_roles(dsn) == {*renamed[3:], PRIVILEGED}
    assert user_databases(dsn) == set()
    assert not await catalog_apply.plan_spec(connstr=dsn, spec=second, privileged_role=PRIVILEGED)


@pytest.mark.parametrize("name", ["x" * 64, "é" * 32, "", "pg_reserved", "public", "nul\x00byte"])
async def test_names_postgres_would_mangle_are_refused_before_anything(
    pgc: pgserver.PgServer, name: str
) -> None:
    with pytest.raises(errors.ConfigError):
        await catalog_apply.apply_spec(
            connstr=pgc.dsn(),
            spec=make_spec(roles=[role("fine"), role(name)]),
            privileged_role=PRIVILEGED,
            concurrency=1,
        )
    assert user_roles(pgc.dsn()) == set()  # not even the privileged role


HOSTILE_SETTINGS = [
    "SET role = 'evil'",
    "SET search_path = 'evil, public'",
    "SET statement_timeout = 1",
    "SET lock_timeout = 1",
    "SET default_transaction_read_only = on",
    "SET client_encoding = 'LATIN1'",
    "SET idle_in_transaction_session_timeout = 1",
]


def make_hostile(server: pgserver.PgServer, dbname: str) -> None:
    ident = sql.Identifier(dbname)
    execute(
        server.dsn(),
        "CREATE ROLE evil NOLOGIN",
        sql.SQL("CREATE DATABASE {}").format(ident),
    )
    execute(
        server.dsn(dbname),
        "CREATE SCHEMA evil",
        # An operator that would hijack `=` on text for sessions that search schema evil.
        "CREATE FUNCTION evil.eq(text, text) RETURNS bool LANGUAGE sql AS 'SELECT false'",
        "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq)",
    )
    for setting in HOSTILE_SETTINGS:
        execute(server.dsn(), sql.SQL("ALTER DATABASE {} " + setting).format(ident))
    execute(
        server.dsn(),
        sql.SQL("ALTER ROLE cloud_admin IN DATABASE {} SET role = 'evil'").format(ident),
    )


async def test_hostile_settings_do_not_reach_our_sessions(pgc: pgserver.PgServer) -> None:
    make_hostile(pgc, "trap")
    # The control: a plain session is hijacked.
    with psycopg.connect(pgc.dsn("trap"), autocommit=True) as plain:
        assert plain.execute("select current_user").fetchone() == ("evil",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            plain.execute("CREATE TABLE t (x int)")
    async with db.connect(pgc.dsn(), dbname="trap") as conn:
        cur = await conn.execute(
            "select current_user, current_setting('search_path'), "
            "current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('default_transaction_read_only'), "
            "current_setting('client_encoding'), current_setting('application_name'), "
            "'a' = 'a'"
        )
        assert await cur.fetchone() == (
            "cloud_admin",
            "",
            "0",
            "0",
            "off",
            "UTF8",
            "compute_ctl",
            True,
        )


async def test_apply_through_hostile_maintenance_and_target_databases(
    pgc: pgserver.PgServer,
) -> None:
    """The whole apply, connected to a hostile maintenance database, doing per-database
    work (with unicode names) inside another hostile database."""
    make_hostile(pgc, "maint")
    execute(pgc.dsn(), 'CREATE DATABASE "ünï trap"')
    execute(
        dsn_of(pgc, "ünï trap"),
        'CREATE ROLE "lëaver"',
        'GRANT CREATE ON SCHEMA public TO "lëaver"',
        'SET ROLE "lëaver"',
        "CREATE TABLE public.t (x int)",
    )
    for setting in HOSTILE_SETTINGS:
        execute(pgc.dsn(), 'ALTER DATABASE "ünï trap" ' + setting)
    compute_spec = make_spec(
        roles=[role("ownér", md5_hash("p", "ownér"))],
        databases=[database("ünï trap", "ownér"), database("fresh", "ownér")],
        deltas=[delta("delete_role", "lëaver")],
    )
    maint = pgc.dsn("maint")
    result = await catalog_apply.apply_spec(
        connstr=maint, spec=compute_spec, privileged_role=PRIVILEGED, concurrency=2
    )
    assert {op.database for op in result.plan.phase(plan_mod.Phase.PER_DATABASE)} == {
        "ünï trap",
        "fresh",
    }
    assert "lëaver" not in user_roles(pgc.dsn())
    owner = (
        "select r.rolname from pg_class c join pg_roles r on r.oid = c.relowner where relname = 't'"
    )
    assert fetch(dsn_of(pgc, "ünï trap") + " options='-c statement_timeout=0'", owner) == [
        ("ownér",)
    ]
    assert not await catalog_apply.plan_spec(
        connstr=maint, spec=compute_spec, privileged_role=PRIVILEGED
    )


EACH_SETTING = [
    # (ALTER DATABASE ... SET, what a plain session shows, what ours shows)
    ("role = 'evil'", "select current_user", "evil", "cloud_admin"),
    ("search_path = 'evil'", "select current_setting('search_path')", "evil", ""),
    # Long enough that the control itself is never cancelled on a loaded machine.
    ("statement_timeout = '1h'", "select current_setting('statement_timeout')", "1h", "0"),
    ("lock_timeout = '1h'", "select current_setting('lock_timeout')", "1h", "0"),
    (
        "default_transaction_read_only = on",
        "select current_setting('default_transaction_read_only')",
        "on",
        "off",
    ),
    ("client_encoding = 'LATIN1'", "select current_setting('client_encoding')", "LATIN1", "UTF8"),
    (
        "idle_in_transaction_session_timeout = 1",
        "select current_setting('idle_in_transaction_session_timeout')",
        "1ms",
        "0",
    ),
]


@pytest.mark.parametrize(
    ("setting", "query", "plain", "ours"), EACH_SETTING, ids=[s[0] for s in EACH_SETTING]
)
@pytest.mark.parametrize("level", ["database", "role in database"])
async def test_each_hostile_setting_is_neutralised(
    pgc: pgserver.PgServer, setting: str, query: str, plain: str, ours: str, level: str
) -> None:
    execute(pgc.dsn(), "CREATE ROLE evil NOLOGIN", "CREATE DATABASE trap")
    target = "DATABASE trap" if level == "database" else "ROLE cloud_admin IN DATABASE trap"
    execute(pgc.dsn(), f"ALTER {target} SET {setting}")
    with psycopg.connect(pgc.dsn("trap"), autocommit=True) as conn:
        assert conn.execute(query).fetchone() == (plain,)  # the control
    async with db.connect(pgc.dsn(), dbname="trap") as session:
        cur = await session.execute(query)
        assert await cur.fetchone() == (ours,)
    execute(pgc.dsn(), "ALTER ROLE cloud_admin IN DATABASE trap RESET ALL")


# Every local caller's own session name: each opens its sessions through pgsession.
CALLERS = [
    db.APPLICATION_NAME,
    ondemand.APPLICATION_NAME,
    schema_dump.APPLICATION_NAME,
    readiness.APPLICATION_NAME,
    monitor.APPLICATION_NAME,
    filecache.APPLICATION_NAME,
]


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_callers_session_defeats_hostile_and_logging_settings(
    pgc: pgserver.PgServer, caller: str
) -> None:
    make_hostile(pgc, "trap")
    execute(
        pgc.dsn(),
        "ALTER ROLE cloud_admin SET log_statement = 'all'",
        "ALTER ROLE cloud_admin IN DATABASE trap SET log_min_duration_statement = 0",
    )
    try:
        async with pgsession.connect(pgc.dsn(), application_name=caller, dbname="trap") as conn:
            cur = await conn.execute(
                "select current_user, current_setting('search_path'), "
                "current_setting('default_transaction_read_only'), "
                "current_setting('log_statement'), current_setting('log_min_error_statement'), "
                "current_setting('log_min_duration_statement'), "
                "current_setting('application_name')"
            )
            assert await cur.fetchone() == ("cloud_admin", "", "off", "none", "panic", "-1", caller)
    finally:
        execute(pgc.dsn(), "ALTER ROLE cloud_admin RESET ALL")
        execute(pgc.dsn(), "ALTER ROLE cloud_admin IN DATABASE trap RESET ALL")


# Modules that connect to other servers (pageserver, safekeepers, a primary, pgbouncer's
# admin console), not to the local postgres: the session policy is for our own postgres.
REMOTE_PEERS = {
    "storage/basebackup.py",
    "storage/safekeepers.py",
    "storage/replica.py",
    "storage/leases.py",
    "pgbouncer.py",
}


def test_every_local_connection_goes_through_pgsession() -> None:
    root = Path(pgsession.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "pgsession.py" or rel in REMOTE_PEERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "connect"
                and ast.unparse(node.value) in {"psycopg", "psycopg.AsyncConnection"}
            ):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
