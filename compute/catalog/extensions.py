"""Pure planner for system extensions: ``pg_stat_statements`` in the maintenance database.

As Neon does, only when the running server preloads it (``shared_preload_libraries``)
and only in the maintenance database; planned only when it is not installed yet.
"""

from __future__ import annotations

from psycopg import sql

from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import model
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["plan_extensions"]

Step = tuple[list[plan_mod.Operation], model.Catalog]
PG_STAT_STATEMENTS = "pg_stat_statements"


def plan_extensions(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    if PG_STAT_STATEMENTS not in catalog.preloaded or PG_STAT_STATEMENTS in catalog.extensions:
        return [], catalog
    op = plan_mod.Operation(
        phase=plan_mod.Phase.EXTENSIONS,
        database=None,
        # search_path is empty on our sessions, so the schema must be named.
        statements=(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA public").format(
                sql.Identifier(PG_STAT_STATEMENTS)
            ),
        ),
        comment="create extension pg_stat_statements (preloaded)",
        obj=f"extension {PG_STAT_STATEMENTS!r}",
    )
    return [op], catalog
