"""Deleting a role that holds privileges from a grantor other than the owner (Neon
#10299): ``DROP OWNED`` revokes only as the owner, even for a superuser, so these
privileges, and what the role passed on from them, would keep ``DROP ROLE`` failing."""

from __future__ import annotations

import psycopg
import pytest

from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver
from tests.catalog.conftest import apply, database, delta, execute, fetch, make_spec, replan, role

pytestmark = pytest.mark.postgres

Phase = plan_mod.Phase


def grant_chain(server: pgserver.PgServer, dbname: str, leaver: str) -> None:
    """owner1 owns; mid holds grant options from it and grants to ``leaver`` (table,
    sequence, one column); ``leaver`` passes some on to third."""
    execute(
        server.dsn(dbname),
        "SET ROLE owner1",
        "CREATE TABLE public.t (id int, secret text)",
        "CREATE SEQUENCE public.q",
        "GRANT SELECT, UPDATE ON public.t, public.q TO mid WITH GRANT OPTION",
        "GRANT SELECT (secret) ON public.t TO mid WITH GRANT OPTION",
        "GRANT INSERT ON public.t TO " + leaver,  # from the owner: DROP OWNED handles it
        "SET ROLE mid",
        f"GRANT SELECT ON public.t, public.q TO {leaver} WITH GRANT OPTION",
        f"GRANT UPDATE (secret) ON public.t TO {leaver}",
        f"SET ROLE {leaver}",
        "GRANT SELECT ON public.t TO third",
    )


def acl_mentions(server: pgserver.PgServer, dbname: str, name: str) -> list[str]:
    """ACL items naming ``name`` on relations and columns in ``public``, as text."""
    rows = fetch(
        server.dsn(dbname),
        "select c.relname || ' ' || x::text from pg_class c, unnest(c.relacl) x "
        "where c.relnamespace = 'public'::regnamespace and position(%s in x::text) > 0 "
        "union all "
        "select c.relname || '.' || a.attname || ' ' || x::text "
        "from pg_class c join pg_attribute a on a.attrelid = c.oid, unnest(a.attacl) x "
        "where c.relnamespace = 'public'::regnamespace and position(%s in x::text) > 0 "
        "order by 1",
        [name, name],
    )
    return [r[0] for r in rows]


async def test_role_with_grants_from_a_non_owner_is_dropped(pgc: pgserver.PgServer) -> None:
    roles = [role(n) for n in ("owner1", "mid", "third", "leaver")]
    databases = [database("db1", "owner1"), database("db2", "owner1")]
    await apply(pgc, make_spec(roles=roles, databases=databases))
    execute(
        pgc.dsn(),
        "CREATE ROLE control",
        "CREATE DATABASE outside OWNER owner1",
        "CREATE DATABASE control_db OWNER owner1",
        "GRANT CONNECT ON DATABASE db1 TO leaver",  # a shared dependency too
    )
    for dbname in ("db1", "db2", "outside"):
        grant_chain(pgc, dbname, "leaver")

    # The control: what PostgreSQL's own REASSIGN/DROP OWNED leave behind.
    grant_chain(pgc, "control_db", "control")
    execute(pgc.dsn("control_db"), "REASSIGN OWNED BY control TO owner1", "DROP OWNED BY control")
    assert acl_mentions(pgc, "control_db", "control") == [
        "q control=r*/mid",
        "t control=r*/mid",
        "t third=r/control",
        "t.secret control=w/mid",
    ]
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        execute(pgc.dsn(), "DROP ROLE control")

    deleting = make_spec(
        roles=[r for r in roles if r["name"] != "leaver"],
        databases=databases,
        deltas=[delta("delete_role", "leaver")],
    )
    plan = await replan(pgc, deleting)
    assert [op.database for op in plan.phase(Phase.DELETE_ROLE_SHARED_REFERENCES)] == [None]
    assert sorted(str(op.database) for op in plan.phase(Phase.PER_DATABASE)) == [
        "db1",
        "db2",
        "outside",
    ]
    await apply(pgc, deleting, concurrency=3)
    assert fetch(pgc.dsn(), "select 1 from pg_roles where rolname = 'leaver'") == []
    for dbname in ("db1", "db2", "outside"):
        # The chain through the deleted role is gone; everyone else keeps theirs.
        assert acl_mentions(pgc, dbname, "leaver") == []
        assert acl_mentions(pgc, dbname, "third") == []
        assert acl_mentions(pgc, dbname, "mid") == [
            "q mid=r*w*/owner1",
            "t mid=r*w*/owner1",
            "t.secret mid=r*/owner1",
        ]
    assert not await replan(pgc, deleting)
