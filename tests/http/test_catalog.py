"""Catalog endpoints against a real PostgreSQL: reads, pg_dump streaming, grants, extensions."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from compute_ctl.compute import state as state_mod
from tests import pgserver
from tests.http.conftest import Api

pytestmark = pytest.mark.postgres

HOSTILE_ROLE = "we\"ird 'role\\ \u00e9"
HOSTILE_DB = "d\"b 'x; DROP DATABASE postgres; --"


def _dsn(pg: pgserver.PgServer, dbname: str) -> str:
    return conninfo.make_conninfo(pg.dsn(), dbname=dbname)


@pytest.fixture(scope="module")
def hostile(own_pg: pgserver.PgServer) -> None:
    with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(HOSTILE_ROLE))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(HOSTILE_DB), sql.Identifier(HOSTILE_ROLE)
            )
        )
    with psycopg.connect(_dsn(own_pg, HOSTILE_DB), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute('CREATE TABLE app.things (id int PRIMARY KEY, "we""ird" text)')


async def test_dbs_and_roles(catalog_api: Api, hostile: None) -> None:
    async with catalog_api.session.get(f"{catalog_api.external}/dbs_and_roles") as r:
        assert r.status == 200
        body = await r.json()
    roles = {role["name"]: role for role in body["roles"]}
    assert roles[HOSTILE_ROLE]["encrypted_password"].startswith("SCRAM-SHA-256$")
    assert roles[HOSTILE_ROLE]["options"] is None
    assert "cloud_admin" in roles
    databases = {db["name"]: db for db in body["databases"]}
    assert databases[HOSTILE_DB] == {
        "name": HOSTILE_DB,
        "owner": HOSTILE_ROLE,
        "options": None,
        "restrict_conn": False,
        "invalid": False,
    }
    assert databases["template0"]["restrict_conn"] is True


async def test_database_schema_streams_pg_dump(catalog_api: Api, hostile: None) -> None:
    async with catalog_api.session.get(
        f"{catalog_api.external}/database_schema", params={"database": HOSTILE_DB}
    ) as r:
        assert r.status == 200
        assert r.content_type == "application/json"  # Neon's, although the body is SQL
        text = await r.text()
    assert "CREATE TABLE app.things" in text
    assert '"we""ird" text' in text
    assert "PostgreSQL database dump complete" in text


@pytest.mark.parametrize("params", [{}, {"database": ""}])
async def test_database_schema_needs_a_database(catalog_api: Api, params: dict[str, str]) -> None:
    async with catalog_api.session.get(
        f"{catalog_api.external}/database_schema", params=params
    ) as r:
        assert r.status == 400


async def test_database_schema_of_a_missing_database_is_404(catalog_api: Api) -> None:
    async with catalog_api.session.get(
        f"{catalog_api.external}/database_schema", params={"database": "no such db\"'"}
    ) as r:
        assert r.status == 404
        assert "does not exist" in (await r.json())["error"]


async def test_insights_is_412_unless_running(api: Api) -> None:
    async with api.session.get(f"{api.external}/insights") as r:
        assert r.status == 412
        assert (await r.json()) == {"error": "invalid compute status: empty"}


async def test_insights_without_the_extension_is_an_empty_list(catalog_api: Api) -> None:
    async with catalog_api.session.get(f"{catalog_api.external}/insights") as r:
        assert r.status == 200
        assert json.loads(await r.json()) == {"pg_stat_statements": []}


async def test_insights_reports_other_users_statements(
    catalog_api: Api, own_pg: pgserver.PgServer, hostile: None
) -> None:
    with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(HOSTILE_ROLE)))
    with psycopg.connect(
        host="127.0.0.1", port=own_pg.port, dbname="postgres", user=HOSTILE_ROLE, password="pw"
    ) as conn:
        conn.execute("SELECT 4242 AS insights_marker")
    try:
        async with catalog_api.session.get(f"{catalog_api.external}/insights") as r:
            assert r.status == 200
            inner = json.loads(await r.json())
        queries = [row["query"] for row in inner["pg_stat_statements"]]
        assert any("insights_marker" in q for q in queries)
        # The superuser's own statements (ours included) are left out.
        assert not any("pg_stat_statements" in q for q in queries)
    finally:
        with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
            conn.execute("DROP EXTENSION pg_stat_statements")


async def test_check_writability(catalog_api: Api, own_pg: pgserver.PgServer) -> None:
    for _ in range(2):  # creates the table the first time, upserts after
        async with catalog_api.session.post(f"{catalog_api.external}/check_writability") as r:
            assert r.status == 200
            assert await r.json() is True
    with psycopg.connect(own_pg.dsn()) as conn:
        row = conn.execute("SELECT count(*) FROM public.health_check").fetchone()
    assert row == (1,)


async def test_check_writability_is_412_unless_running(api: Api) -> None:
    async with api.session.post(f"{api.external}/check_writability") as r:
        assert r.status == 412


def _schema_privileges(dsn: str, *, schema: str, role: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a, pg_roles r "
            "WHERE a.grantee = r.oid AND r.rolname = %s AND n.nspname = %s",
            (role, schema),
        ).fetchall()
    return {row[0] for row in rows}


async def test_grants(catalog_api: Api, own_pg: pgserver.PgServer, hostile: None) -> None:
    body = {"database": HOSTILE_DB, "schema": "app", "privileges": ["USAGE"], "role": "cloud_admin"}
    body["role"] = "pg_monitor"
    async with catalog_api.session.post(f"{catalog_api.internal}/grants", json=body) as r:
        assert r.status == 201
        assert await r.json() == body
    assert _schema_privileges(_dsn(own_pg, HOSTILE_DB), schema="app", role="pg_monitor") == {
        "USAGE"
    }
    body["privileges"] = ["USAGE", "CREATE"]
    for _ in range(2):  # only what is missing is granted; a repeat is a no-op
        async with catalog_api.session.post(f"{catalog_api.internal}/grants", json=body) as r:
            assert r.status == 201
    assert _schema_privileges(_dsn(own_pg, HOSTILE_DB), schema="app", role="pg_monitor") == {
        "USAGE",
        "CREATE",
    }


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"privileges": ["DROP TABLE x; --"]}, 400),
        ({"privileges": "USAGE"}, 400),
        ({"schema": None}, 400),
        ({"database": "no such database"}, 404),
        ({"schema": "no_such_schema"}, 404),
        ({"role": "no such role"}, 404),
        ({"privileges": ["SELECT"]}, 400),  # not a schema privilege
    ],
)
async def test_grants_rejects_bad_requests(
    catalog_api: Api, hostile: None, change: dict[str, Any], status: int
) -> None:
    body = {"database": HOSTILE_DB, "schema": "app", "privileges": ["USAGE"], "role": HOSTILE_ROLE}
    body.update(change)
    async with catalog_api.session.post(f"{catalog_api.internal}/grants", json=body) as r:
        assert r.status == status, await r.text()
        assert "error" in await r.json()


async def test_grants_and_extensions_are_412_unless_running(api: Api) -> None:
    grant = {"database": "postgres", "schema": "public", "privileges": ["USAGE"], "role": "x"}
    async with api.session.post(f"{api.internal}/grants", json=grant) as r:
        assert r.status == 412
    ext = {"extension": "pg_trgm", "database": "postgres", "version": "1.6"}
    async with api.session.post(f"{api.internal}/extensions", json=ext) as r:
        assert r.status == 412


def _extversion(dsn: str, name: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = %s", (name,)
        ).fetchone()
    return None if row is None else str(row[0])


async def test_extensions_install_update_and_noop(
    catalog_api: Api, own_pg: pgserver.PgServer, hostile: None
) -> None:
    dsn = _dsn(own_pg, HOSTILE_DB)
    steps = [("1.5", "1.5"), ("1.6", "1.6"), ("1.6", "1.6")]  # install, update, no-op
    for version, expected in steps:
        body = {"extension": "pg_trgm", "database": HOSTILE_DB, "version": version}
        async with catalog_api.session.post(f"{catalog_api.internal}/extensions", json=body) as r:
            assert r.status == 201, await r.text()
            assert await r.json() == {"extension": "pg_trgm", "version": version}
        assert _extversion(dsn, "pg_trgm") == expected
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        ).fetchone()
    assert row == ("public",)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"extension": "no_such_extension", "database": "postgres", "version": "1.0"}, 400),
        ({"extension": "pg_trgm", "database": "postgres", "version": "99.9"}, 400),
        ({"extension": "pg_trgm", "database": "nope", "version": "1.6"}, 404),
        ({"extension": "pg_trgm", "database": "postgres"}, 400),
        ({"extension": "pg_trgm", "database": "postgres", "version": 1.6}, 400),
        ({"extension": "", "database": "postgres", "version": "1.6"}, 400),
    ],
)
async def test_extensions_rejects_bad_requests(
    catalog_api: Api, own_pg: pgserver.PgServer, body: dict[str, Any], status: int
) -> None:
    async with catalog_api.session.post(f"{catalog_api.internal}/extensions", json=body) as r:
        assert r.status == status, await r.text()
    assert _extversion(own_pg.dsn(), "pg_trgm") is None


async def test_readyz(catalog_api: Api, api: Api) -> None:
    async with catalog_api.session.get(f"{catalog_api.external}/readyz") as r:
        assert r.status == 200
    async with api.session.get(f"{api.external}/readyz") as r:  # status empty
        assert r.status == 503
        assert "empty" in (await r.json())["error"]
    async with api.session.get(f"{api.external}/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": state_mod.ComputeStatus.EMPTY.value}
