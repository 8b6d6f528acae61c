"""``drop_subscriptions_before_start`` against a real PostgreSQL: the subscriptions a new
timeline inherited are dropped once, in every spec database, and the drop is recorded
in ``neon.drop_subscriptions_done`` so later subscriptions survive restarts."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from compute_ctl.compute import spec
from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver
from tests.catalog.conftest import apply, database, execute, fetch, make_spec, replan, role

pytestmark = pytest.mark.postgres

Phase = plan_mod.Phase
PARENT = "aa" * 16
CHILD = "bb" * 16
NOWHERE = "host=127.0.0.1 port=1 dbname=nowhere"


def subscribe(server: pgserver.PgServer, dbname: str, name: str) -> None:
    # connect = false: no publisher needed; the slot name stays set, as on a real
    # subscriber, so a plain DROP SUBSCRIPTION would try to reach the publisher.
    execute(
        server.dsn(dbname),
        sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION p WITH (connect = false)").format(
            sql.Identifier(name), sql.Literal(NOWHERE)
        ),
    )


def subscriptions(server: pgserver.PgServer) -> set[tuple[str, str]]:
    rows = fetch(
        server.dsn(),
        "select d.datname, s.subname from pg_subscription s "
        "join pg_database d on d.oid = s.subdbid",
    )
    return {(r[0], r[1]) for r in rows}


def branch_spec(timeline: str | None, **extra: Any) -> spec.ComputeSpec:
    return make_spec(
        roles=[role("o")],
        databases=[database("app", "o"), database("other", "o")],
        drop_subscriptions_before_start=True,
        timeline_id=timeline,
        **extra,
    )


def marker(server: pgserver.PgServer) -> list[tuple[Any, ...]]:
    return fetch(server.dsn(), "select id, timeline_id from neon.drop_subscriptions_done")


async def test_inherited_subscriptions_dropped_once_per_timeline(pgc: pgserver.PgServer) -> None:
    await apply(pgc, make_spec(roles=[role("o")], databases=[database("app", "o")]))
    execute(pgc.dsn(), "CREATE DATABASE other OWNER o", "CREATE DATABASE unmanaged OWNER o")
    for dbname, name in (("app", "s1"), ("app", 'odd "name'), ("other", "s3")):
        subscribe(pgc, dbname, name)
    subscribe(pgc, "unmanaged", "kept")  # outside the spec: not ours to drop
    subscribe(pgc, "postgres", "system")  # Neon leaves the system database alone too

    on_child = branch_spec(CHILD)
    plan = await replan(pgc, on_child)
    drops = [op for op in plan.phase(Phase.PER_DATABASE) if "SUBSCRIPTION" in op.render()]
    assert [op.database for op in drops] == ["app", "other"]
    assert [op.phase for op in plan][-1] is Phase.FINALIZE_DROP_SUBSCRIPTIONS
    await apply(pgc, on_child, concurrency=2)
    assert subscriptions(pgc) == {("unmanaged", "kept"), ("postgres", "system")}
    assert marker(pgc) == [(1, CHILD)]

    # The user subscribes again after start: a restart with the same spec keeps it.
    subscribe(pgc, "app", "mine")
    assert not await replan(pgc, on_child)
    assert ("app", "mine") in subscriptions(pgc)

    # A branch of this branch (another timeline) drops what it inherited, once.
    on_grandchild = branch_spec(PARENT)
    await apply(pgc, on_grandchild)
    assert ("app", "mine") not in subscriptions(pgc)
    assert marker(pgc) == [(1, PARENT)]  # one row, overwritten
    assert not await replan(pgc, on_grandchild)


async def test_vanilla_records_the_empty_timeline(pgc: pgserver.PgServer) -> None:
    execute(pgc.dsn(), "CREATE ROLE o", "CREATE DATABASE app OWNER o")
    subscribe(pgc, "app", "s")
    vanilla = branch_spec(None)
    await apply(pgc, vanilla)
    assert subscriptions(pgc) == set()
    assert marker(pgc) == [(1, "")]
    subscribe(pgc, "app", "later")
    assert not await replan(pgc, vanilla)
    # Without the flag a subscription is never touched.
    plain = make_spec(roles=[role("o")], databases=[database("app", "o")])
    execute(pgc.dsn(), "DROP SCHEMA neon CASCADE")
    plan = await replan(pgc, plain)
    assert [op.phase for op in plan] == [Phase.CREATE_SCHEMA_NEON]
    await apply(pgc, plain)
    assert subscriptions(pgc) == {("app", "later")}
