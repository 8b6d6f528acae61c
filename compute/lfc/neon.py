"""The Neon backend: the ``neon`` extension's own Local File Cache state functions.

Neon's ``compute_prewarm.rs``: ``neon.get_local_cache_state()`` returns the state (or
NULL), ``neon.prewarm_local_cache($1)`` loads it, and ``neon.get_prewarm_info()``'s first
three columns are the counts (an unreadable value counts as 0).
"""

from __future__ import annotations

from typing import Any

from compute_ctl.compute import pgsession
from compute_ctl.compute.lfc import backends, vanilla

__all__ = ["NeonBackend"]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class NeonBackend:
    name = "neon"

    async def save(self, conn: pgsession.Connection) -> bytes | None:
        cur = await conn.execute("SELECT neon.get_local_cache_state()")
        row = await cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    async def restore(self, conn: pgsession.Connection, state: bytes) -> backends.Counts:
        if vanilla.is_buffer_list(state):
            raise backends.StateError(
                "the saved state is a buffer list from a compute without the neon extension"
            )
        await conn.execute("SELECT neon.prewarm_local_cache(%s)", [state])
        cur = await conn.execute("SELECT * FROM neon.get_prewarm_info()")
        row = await cur.fetchone() or ()
        total, prewarmed, skipped = (_int(row[i]) if i < len(row) else 0 for i in range(3))
        return backends.Counts(total=total, prewarmed=prewarmed, skipped=skipped)
