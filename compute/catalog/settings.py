"""Which settings changed in the configuration but wait for a restart.

The node rewrites ``postgresql.conf`` and reloads; this module only reads
``pg_settings.pending_restart`` so those settings are reported by name, never
silently ignored. It writes nothing.
"""

from __future__ import annotations

import psycopg

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import db

__all__ = ["pending_restart"]

PHASE = "pending_restart"


async def pending_restart(*, connstr: str) -> list[str]:
    """Names of settings whose new value takes effect only after a restart, sorted.

    A failure raises ``ApplyError`` naming this phase, ``pg_settings`` and the cause."""
    async with db.connect(connstr) as conn:
        try:
            cur = await conn.execute(
                "SELECT s.name::text FROM pg_catalog.pg_settings s WHERE s.pending_restart "
                "ORDER BY s.name"
            )
            return [str(row[0]) for row in await cur.fetchall()]
        except psycopg.Error as e:
            state = f" (SQLSTATE {e.sqlstate})" if e.sqlstate else ""
            raise errors.ApplyError(
                f"{PHASE}: reading pg_settings failed: {e}{state}", phase=PHASE, obj="pg_settings"
            ) from e
