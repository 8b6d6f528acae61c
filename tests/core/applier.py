"""A small real catalog applier for core's tests (roles and databases through psycopg.sql).

The catalog package owns the real apply; core's tests need one that is cheap and
independent of it, yet really changes PostgreSQL: missing roles are created with their
password verifier, missing databases with their owner. ``applied`` records what was
asked, so tests can assert the last accepted spec reached the catalog.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
from psycopg import sql

from compute_ctl.compute import admission
from compute_ctl.compute import spec as spec_mod

__all__ = ["SqlApplier", "SqlPlan"]


@dataclasses.dataclass
class SqlPlan:
    statements: list[sql.Composed]

    @property
    def statement_count(self) -> int:
        return len(self.statements)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"phase": "test", "sql": "", "database": None, "comment": ""} for _ in self.statements
        ]

    def __bool__(self) -> bool:
        return bool(self.statements)


def _password(role: spec_mod.Role) -> sql.Composable:
    value = role.encrypted_password
    if value is None:
        return sql.SQL("NULL")
    return sql.Literal(value if value.startswith("SCRAM-SHA-256") else "md5" + value)


class SqlApplier:
    def __init__(self) -> None:
        self.applied: list[spec_mod.ComputeSpec] = []

    async def _plan(
        self, conn: psycopg.AsyncConnection[Any], spec: spec_mod.ComputeSpec
    ) -> SqlPlan:
        cur = await conn.execute("select rolname from pg_catalog.pg_roles")
        roles = {r[0] for r in await cur.fetchall()}
        cur = await conn.execute("select datname from pg_catalog.pg_database")
        databases = {r[0] for r in await cur.fetchall()}
        statements: list[sql.Composed] = []
        for role in spec.cluster.roles:
            if role.name not in roles:
                statements.append(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role.name), _password(role)
                    )
                )
        for db in spec.cluster.databases:
            if db.name not in databases:
                statements.append(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(db.name), sql.Identifier(db.owner)
                    )
                )
        return SqlPlan(statements)

    async def apply_spec(
        self,
        *,
        connstr: str,
        admitted: admission.Admitted,
        concurrency: int,
        deadline: float | None = None,
    ) -> object:
        async with await psycopg.AsyncConnection.connect(connstr, autocommit=True) as conn:
            plan = await self._plan(conn, admitted.spec)
            for statement in plan.statements:
                await conn.execute(statement)
        self.applied.append(admitted.spec)
        return plan

    async def plan_spec(self, *, connstr: str, admitted: admission.Admitted) -> SqlPlan:
        async with await psycopg.AsyncConnection.connect(connstr, autocommit=True) as conn:
            return await self._plan(conn, admitted.spec)

    async def pending_restart(self, *, connstr: str) -> list[str]:
        async with await psycopg.AsyncConnection.connect(connstr, autocommit=True) as conn:
            cur = await conn.execute(
                "select name from pg_catalog.pg_settings where pending_restart order by name"
            )
            return [r[0] for r in await cur.fetchall()]
