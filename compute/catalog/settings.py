"""Which settings changed in the configuration but wait for a restart.

The node rewrites ``postgresql.conf`` and reloads; this module only reads
``pg_settings.pending_restart`` so those settings are reported by name, never
silently ignored. It writes nothing.
"""

from __future__ import annotations

from compute_ctl.compute.catalog import db

__all__ = ["pending_restart"]


async def pending_restart(*, connstr: str) -> list[str]:
    """Names of settings whose new value takes effect only after a restart, sorted."""
    async with db.connect(connstr) as conn:
        cur = await conn.execute(
            "SELECT s.name::text FROM pg_catalog.pg_settings s WHERE s.pending_restart "
            "ORDER BY s.name"
        )
        return [str(row[0]) for row in await cur.fetchall()]
