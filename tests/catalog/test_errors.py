"""Failures: bad specs are refused before anything changes; a failing statement raises an
ApplyError naming phase and object (never a secret); re-running after a failure is safe."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg
import pytest

from compute_ctl.compute import errors, spec
from compute_ctl.compute.catalog import apply as catalog_apply
from compute_ctl.compute.catalog import desired as desired_mod
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
    replan,
    role,
    scram_verifier,
    user_roles,
)
from tests.catalog.test_dryrun_drift import CATALOG_QUERY

pytestmark = pytest.mark.postgres


def grant_holders(dsn: str) -> set[str]:
    rows = fetch(
        dsn,
        "select d.datname from pg_database d, aclexplode(d.datacl) a "
        "join pg_roles r on r.oid = a.grantee where r.rolname = %s and a.privilege_type = 'CREATE'",
        [PRIVILEGED],
    )
    return {r[0] for r in rows}


async def apply_past_admission(
    pgc: pgserver.PgServer,
    compute_spec: spec.ComputeSpec,
    *,
    connlimit: dict[str, int],
    concurrency: int = 4,
) -> catalog_apply.ApplyResult:
    """Apply ``compute_spec`` with connection limits admission would refuse (out of
    PostgreSQL's range), so that PostgreSQL itself fails the statement of that object."""
    desired = desired_mod.from_spec(compute_spec, privileged_role=PRIVILEGED)
    roles = tuple(
        dataclasses.replace(r, attrs=dataclasses.replace(r.attrs, connlimit=connlimit[r.name]))
        if r.name in connlimit
        else r
        for r in desired.roles
    )
    databases = tuple(
        dataclasses.replace(d, connlimit=connlimit[d.name]) if d.name in connlimit else d
        for d in desired.databases
    )
    desired = dataclasses.replace(desired, roles=roles, databases=databases)
    return await catalog_apply.apply_desired(
        connstr=pgc.dsn(), desired=desired, concurrency=concurrency
    )


def logins(dsn: str) -> dict[str, bool]:
    rows = fetch(dsn, "select rolname, rolcanlogin from pg_roles where rolname like 'r_'")
    return dict(rows)


async def test_failing_statement_in_a_batch_is_named_and_earlier_work_kept(
    pgc: pgserver.PgServer,
) -> None:
    execute(pgc.dsn(), *(f"CREATE ROLE {n} NOLOGIN" for n in ("r1", "r2", "r3")))
    bad = make_spec(roles=[role("r1"), role("r2"), role("r3")])
    for _ in range(2):  # the same failure, re-run safely
        with pytest.raises(errors.ApplyError) as failed:
            await apply_past_admission(pgc, bad, connlimit={"r2": -5})
        assert failed.value.phase == "create_and_alter_roles"
        assert failed.value.obj == "role 'r2'"
        assert "invalid connection limit" in str(failed.value)
        # Not an input error: the message names the phase, the object and the cause.
        assert str(failed.value).startswith("create_and_alter_roles: alter role 'r2': ")
        assert str(failed.value).endswith("(SQLSTATE 22023)")
        # The batch rolled back, then was replayed one by one: r1 is done, r3 is not.
        assert logins(pgc.dsn()) == {"r1": True, "r2": False, "r3": False}
    good = make_spec(roles=[role("r1"), role("r2"), role("r3")])
    await apply(pgc, good)
    assert logins(pgc.dsn()) == {"r1": True, "r2": True, "r3": True}
    assert not await replan(pgc, good)


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_failing_database_names_itself_sequential_or_concurrent(
    pgc: pgserver.PgServer, concurrency: int
) -> None:
    execute(pgc.dsn(), "CREATE ROLE o", *(f"CREATE DATABASE {n} OWNER o" for n in "abc"))

    def with_limit(limit: str) -> Any:
        return make_spec(
            roles=[role("o")],
            databases=[
                database("a", "o"),
                database("b", "o", [option("CONNECTION LIMIT", limit, "integer")]),
                database("c", "o"),
            ],
        )

    with pytest.raises(errors.ApplyError) as failed:
        await apply_past_admission(
            pgc, with_limit("5"), connlimit={"b": -5}, concurrency=concurrency
        )
    assert failed.value.phase == "create_and_alter_databases"
    assert failed.value.obj == "database 'b'"
    if concurrency == 1:  # one session, batch replayed: a's grant is in, c's is not
        assert grant_holders(pgc.dsn()) == {"a"}
    await apply(pgc, with_limit("5"), concurrency=concurrency)
    assert grant_holders(pgc.dsn()) == {"a", "b", "c"}
    assert not await replan(pgc, with_limit("5"))


async def test_errors_never_carry_secrets(pgc: pgserver.PgServer) -> None:
    secret = scram_verifier("do not leak")
    compute_spec = make_spec(roles=[role("leaky", secret)])
    with pytest.raises(errors.ApplyError) as failed:
        await apply_past_admission(pgc, compute_spec, connlimit={"leaky": -7})
    assert failed.value.phase == "create_and_alter_roles"
    assert failed.value.obj == "role 'leaky'"
    chain: list[BaseException] = []
    cause: BaseException | None = failed.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert len(chain) >= 2  # the PostgreSQL error is chained, for debugging
    for error in chain:
        assert secret not in str(error)
        assert secret.split("$")[2] not in repr(error.args)


async def test_rerun_after_a_failure_in_the_last_phase(pgc: pgserver.PgServer) -> None:
    """A role owning objects in a database nobody may connect to cannot be dropped: the
    apply fails in drop_roles with everything before it done; once the database accepts
    connections again, the same apply finishes the job."""
    execute(pgc.dsn(), "CREATE ROLE stuck", "CREATE DATABASE locked OWNER stuck")
    execute(
        pgc.dsn("locked"), "CREATE TABLE public.t (x int)", "ALTER TABLE public.t OWNER TO stuck"
    )
    execute(pgc.dsn(), "ALTER DATABASE locked OWNER TO cloud_admin")
    execute(pgc.dsn(), "ALTER DATABASE locked ALLOW_CONNECTIONS false")
    compute_spec = make_spec(
        roles=[role("kept")],
        deltas=[delta("delete_role", "stuck")],
    )
    with pytest.raises(errors.ApplyError) as failed:
        await apply(pgc, compute_spec)
    assert failed.value.phase == "drop_roles"
    assert failed.value.obj == "role 'stuck'"
    assert "kept" in user_roles(pgc.dsn())  # earlier phases are done
    execute(pgc.dsn(), "ALTER DATABASE locked ALLOW_CONNECTIONS true")
    result = await apply(pgc, compute_spec)
    assert [op.obj for op in result.plan] == [
        "role 'stuck' in database 'locked'",
        "role 'stuck'",
    ]
    assert "stuck" not in user_roles(pgc.dsn())
    assert not await replan(pgc, compute_spec)


BAD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("unsupported role option", {"roles": [role("r", None, [option("SUPERUSER; DROP", None)])]}),
    ("PASSWORD as an option", {"roles": [role("r", None, [option("PASSWORD", "x")])]}),
    ("plain-text password", {"roles": [role("r", "hunter2")]}),
    ("truncated SCRAM verifier", {"roles": [role("r", "SCRAM-SHA-256$4096:c2FsdA==$c3Q=:c2U=")]}),
    ("conflicting flags", {"roles": [role("r", None, [option("LOGIN"), option("NOLOGIN")])]}),
    ("bad connection limit", {"roles": [role("r", None, [option("CONNECTION LIMIT", "x")])]}),
    (
        "connection limit out of range",
        {"roles": [role("r", None, [option("CONNECTION LIMIT", "-5")])]},
    ),
    (
        "unknown database option",
        {"roles": [role("o")], "databases": [database("d", "o", [option("OID", "1")])]},
    ),
    ("owner not a role", {"roles": [], "databases": [database("d", "nobody")]}),
    ("duplicate role", {"roles": [role("r"), role("r")]}),
    ("created and deleted", {"roles": [role("r")], "deltas": [delta("delete_role", "r")]}),
    ("rename without new name", {"deltas": [delta("rename_role", "r")]}),
    ("delete the privileged role", {"deltas": [delta("delete_role", PRIVILEGED)]}),
    ("delete the superuser", {"deltas": [delta("delete_role", "cloud_admin")]}),
    ("delete the maintenance db", {"deltas": [delta("delete_db", "postgres")]}),
    ("spec role is the superuser", {"roles": [role("cloud_admin")]}),
]


@pytest.mark.parametrize(("why", "parts"), BAD_SPECS, ids=[w for w, _ in BAD_SPECS])
async def test_bad_specs_are_refused_and_nothing_changes(
    pgc: pgserver.PgServer, why: str, parts: dict[str, Any]
) -> None:
    before = fetch(pgc.dsn(), CATALOG_QUERY)
    with pytest.raises(errors.ConfigError):
        await apply(pgc, make_spec(**parts))
    assert fetch(pgc.dsn(), CATALOG_QUERY) == before


async def test_unreachable_server_is_an_apply_error() -> None:
    connstr = f"postgresql://cloud_admin@127.0.0.1:{pgserver.free_port()}/postgres"
    with pytest.raises(errors.ApplyError) as failed:
        await catalog_apply.apply_spec(
            connstr=connstr, spec=make_spec(), privileged_role=PRIVILEGED, concurrency=1
        )
    assert failed.value.phase == "connect"
    assert failed.value.obj == "the maintenance database"


async def test_per_database_connection_failure_names_the_phase(pgc: pgserver.PgServer) -> None:
    """A database that refuses us (pg_hba reject) fails observation or the per-database
    phase, naming the database."""
    execute(pgc.dsn(), "CREATE ROLE o", "CREATE ROLE leaver", "CREATE DATABASE refusing OWNER o")
    execute(pgc.dsn("refusing"), "CREATE TABLE public.t (x int)", "ALTER TABLE t OWNER TO leaver")
    hba = pgc.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host refusing all 127.0.0.1/32 reject\n" + original)
    try:
        execute(pgc.dsn(), "select pg_reload_conf()")
        wait_until_refused(pgc, "refusing")
        # In the spec: its schema work needs a look inside, while observing.
        in_spec = make_spec(roles=[role("o")], databases=[database("refusing", "o")])
        with pytest.raises(errors.ApplyError) as failed:
            await catalog_apply.plan_spec(
                connstr=pgc.dsn(), spec=in_spec, privileged_role=PRIVILEGED
            )
        assert failed.value.phase == "connect"
        assert failed.value.obj == "database 'refusing'"
        # Not in the spec, but holding a deleted role's table: the per-database phase.
        deleting = make_spec(roles=[role("o")], deltas=[delta("delete_role", "leaver")])
        with pytest.raises(errors.ApplyError) as failed:
            await apply(pgc, deleting)
        assert failed.value.phase == "per_database"
        assert failed.value.obj == "database 'refusing'"
        assert "cannot connect" in str(failed.value)
    finally:
        hba.write_text(original)
        execute(pgc.dsn(), "select pg_reload_conf()")
        wait_until_refused(pgc, "refusing", refused=False)
    await apply(pgc, deleting)  # re-run once reachable
    assert "leaver" not in user_roles(pgc.dsn())


def wait_until_refused(server: pgserver.PgServer, dbname: str, *, refused: bool = True) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(server.dsn(dbname)).close()
            now_refused = False
        except psycopg.OperationalError:
            now_refused = True
        if now_refused == refused:
            return
        assert time.monotonic() < deadline, "pg_hba.conf reload did not take effect"
        time.sleep(0.01)
