"""Pure planners for Neon's system objects in the maintenance database.

- ``create_schema_neon`` (Neon phase 7): schema ``neon``, home of the ``neon`` extension
  and of ``neon.drop_subscriptions_done``; planned only when it is missing.
- ``neon_extension`` (phase 10): install, relocate into ``neon`` and update the ``neon``
  extension, each only when observation shows the need (Neon runs all four statements
  on every apply). Vanilla PostgreSQL cannot install it and gets nothing.
- ``availability_check`` (phase 11): ``public.health_check`` with row 1, as
  ``/check_writability`` expects it; planned only when the table is missing.

SQL is composed only with ``psycopg.sql``. No I/O.
"""

from __future__ import annotations

import dataclasses

from psycopg import sql

from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import health_check, model
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = [
    "NEON_EXTENSION",
    "NEON_SCHEMA",
    "availability_check",
    "create_schema_neon",
    "neon_extension",
]

Phase = plan_mod.Phase
Step = tuple[list[plan_mod.Operation], model.Catalog]
NEON_SCHEMA = "neon"
NEON_EXTENSION = "neon"


def create_schema_neon(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    if catalog.neon_schema:
        return [], catalog
    op = plan_mod.Operation(
        phase=Phase.CREATE_SCHEMA_NEON,
        database=None,
        statements=(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(NEON_SCHEMA)),),
        comment="create schema neon for the neon extension and compute_ctl's tables",
        obj=f"schema {NEON_SCHEMA!r}",
    )
    return [op], dataclasses.replace(catalog, neon_schema=True)


def neon_extension(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    extension = catalog.neon_extension
    if extension is None:
        # Not in pg_available_extensions: vanilla PostgreSQL has no `neon` extension
        # (it comes with Neon's PostgreSQL build), so there is nothing to install.
        return [], catalog
    ident = sql.Identifier(NEON_EXTENSION)
    schema = sql.Identifier(NEON_SCHEMA)
    statements: list[plan_mod.Statement] = []
    what: list[str] = []
    if extension.installed_version is None:
        statements.append(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(ident, schema)
        )
        what.append("install")
    else:
        if extension.schema != NEON_SCHEMA:
            # Old versions were created non-relocatable in public (Neon's compat fix).
            statements += [
                sql.SQL(
                    "UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname = {}"
                ).format(sql.Literal(NEON_EXTENSION)),
                sql.SQL("ALTER EXTENSION {} SET SCHEMA {}").format(ident, schema),
            ]
            what.append(f"move from schema {extension.schema!r}")
        if extension.installed_version != extension.default_version:
            statements.append(sql.SQL("ALTER EXTENSION {} UPDATE").format(ident))
            what.append(f"update {extension.installed_version} -> {extension.default_version}")
    if not statements:
        return [], catalog
    op = plan_mod.Operation(
        phase=Phase.NEON_EXTENSION,
        database=None,
        statements=tuple(statements),
        comment="extension neon: " + ", ".join(what),
        obj=f"extension {NEON_EXTENSION!r}",
    )
    done = dataclasses.replace(
        extension, installed_version=extension.default_version, schema=NEON_SCHEMA
    )
    return [op], dataclasses.replace(catalog, neon_extension=done)


def availability_check(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    if catalog.health_check:
        return [], catalog
    op = plan_mod.Operation(
        phase=Phase.AVAILABILITY_CHECK,
        database=None,
        statements=(health_check.CREATE_TABLE, health_check.UPSERT_ROW),
        comment=f"create {health_check.QUALIFIED_NAME} for /check_writability",
        obj=f"table {health_check.QUALIFIED_NAME!r}",
    )
    return [op], dataclasses.replace(catalog, health_check=True)
