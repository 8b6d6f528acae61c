"""Fixtures and helpers for the catalog tier: specs from short literals, a catalog reset
for the session PostgreSQL, and read-backs of what PostgreSQL really holds."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from compute_ctl.compute import spec
from compute_ctl.compute.catalog import apply as catalog_apply
from compute_ctl.compute.catalog import plan as plan_mod
from tests import pgserver

PRIVILEGED = "neon_superuser"
SYSTEM_DATABASES = ("postgres", "template0", "template1")
FIRST_NORMAL_OID = 16384


def role(
    name: str, password: str | None = None, options: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"name": name, "encrypted_password": password, "options": list(options or []) or None}


def database(
    name: str, owner: str, options: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"name": name, "owner": owner, "options": list(options or []) or None}


def option(name: str, value: str | None = None, vartype: str = "string") -> dict[str, Any]:
    return {"name": name, "value": value, "vartype": vartype}


def delta(action: str, name: str, new_name: str | None = None) -> dict[str, Any]:
    return {"action": action, "name": name, "new_name": new_name}


def make_spec(
    *,
    roles: Sequence[dict[str, Any]] = (),
    databases: Sequence[dict[str, Any]] = (),
    deltas: Sequence[dict[str, Any]] = (),
    **extra: Any,
) -> spec.ComputeSpec:
    return spec.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": list(roles), "databases": list(databases)},
            "delta_operations": list(deltas) or None,
            **extra,
        }
    )


def dsn_of(server: pgserver.PgServer, dbname: str) -> str:
    """A connection string for any database name (URLs would need percent-encoding)."""
    return conninfo.make_conninfo(server.dsn(), dbname=dbname)


def execute(dsn: str, *statements: str | sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def fetch(dsn: str, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def user_roles(dsn: str) -> set[str]:
    rows = fetch(dsn, "select rolname from pg_authid where oid >= %s", [FIRST_NORMAL_OID])
    return {r[0] for r in rows}


def user_databases(dsn: str) -> set[str]:
    rows = fetch(
        dsn, "select datname from pg_database where not datname = any(%s)", [list(SYSTEM_DATABASES)]
    )
    return {r[0] for r in rows}


def password_of(dsn: str, name: str) -> str | None:
    rows = fetch(dsn, "select rolpassword from pg_authid where rolname = %s", [name])
    assert rows, f"role {name!r} does not exist"
    value: str | None = rows[0][0]
    return value


def owner_of_database(dsn: str, name: str) -> str:
    rows = fetch(
        dsn,
        "select r.rolname from pg_database d join pg_authid r on r.oid = d.datdba "
        "where d.datname = %s",
        [name],
    )
    assert rows, f"database {name!r} does not exist"
    owner: str = rows[0][0]
    return owner


def reset_catalog(server: pgserver.PgServer) -> None:
    """Drop every database, role and subscription the tests made, and the system objects
    an apply creates in ``postgres``, as after initdb; keep the server."""
    dsn = server.dsn()
    for dbname, subname in fetch(
        dsn,
        "select d.datname, s.subname from pg_subscription s "
        "join pg_database d on d.oid = s.subdbid",
    ):
        ident = sql.Identifier(subname)
        execute(
            server.dsn(dbname),
            sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident),
            sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident),
            sql.SQL("DROP SUBSCRIPTION {}").format(ident),
        )
    for (name,) in fetch(
        dsn, "select datname from pg_database where not datname = any(%s)", [list(SYSTEM_DATABASES)]
    ):
        ident = sql.Identifier(name)
        execute(
            dsn,
            sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(ident),
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident),
        )
    execute(
        dsn,
        "DROP EXTENSION IF EXISTS pg_stat_statements",
        "DROP TABLE IF EXISTS public.health_check",
        "DROP SCHEMA IF EXISTS neon CASCADE",
    )
    names = sorted(user_roles(dsn))
    if names:
        idents = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        execute(dsn, sql.SQL("DROP OWNED BY {}").format(idents))
        for name in names:
            execute(dsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture(scope="package")
def catalog_server() -> Iterator[pgserver.PgServer]:
    """This tier's own PostgreSQL: its tests wipe the user catalog, which must not touch
    objects other tiers keep in ``pg_session``."""
    with pgserver.running() as server:
        yield server


@pytest.fixture
def pgc(catalog_server: pgserver.PgServer) -> Iterator[pgserver.PgServer]:
    """The tier's PostgreSQL with an empty user catalog, emptied again afterwards."""
    reset_catalog(catalog_server)
    yield catalog_server
    reset_catalog(catalog_server)


def scram_verifier(
    password: str, *, salt: bytes = b"compute-ctl-salt", iterations: int = 4096
) -> str:
    """A real SCRAM-SHA-256 verifier, as a control plane would send it."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def md5_hash(password: str, name: str) -> str:
    """The bare md5 hash Neon's control plane sends (PostgreSQL salts it with the name)."""
    return hashlib.md5((password + name).encode()).hexdigest()  # noqa: S324


async def apply(
    server: pgserver.PgServer, compute_spec: spec.ComputeSpec, *, concurrency: int = 4
) -> catalog_apply.ApplyResult:
    return await catalog_apply.apply_spec(
        connstr=server.dsn(), spec=compute_spec, privileged_role=PRIVILEGED, concurrency=concurrency
    )


async def replan(server: pgserver.PgServer, compute_spec: spec.ComputeSpec) -> plan_mod.Plan:
    return await catalog_apply.plan_spec(
        connstr=server.dsn(), spec=compute_spec, privileged_role=PRIVILEGED
    )
