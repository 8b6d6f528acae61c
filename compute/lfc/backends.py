"""What a cache state is, and who saves and restores it: one interface, two backends.

``choose`` picks the backend from what the maintenance database offers, at every
operation (an extension created after start is seen by the next one):

- ``neon.NeonBackend`` when the ``neon`` extension's functions exist (extension 1.6 or
  later): the blob is whatever ``neon.get_local_cache_state()`` returns;
- ``vanilla.VanillaBackend`` otherwise: the blob is compute_ctl's list of the blocks in
  ``shared_buffers``.

A backend neither compresses nor transfers anything (``controller`` and ``storage`` do);
it turns a maintenance session into state bytes and back.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Protocol

from compute_ctl.compute import pgsession

__all__ = ["Backend", "Connect", "Counts", "StateError", "choose"]

Connect = Callable[[str | None], contextlib.AbstractAsyncContextManager[pgsession.Connection]]
"""A session on a database by name (``None``: the maintenance database)."""


class StateError(Exception):
    """A state this backend cannot make or use (e.g. saved by the other backend, damaged)."""


@dataclasses.dataclass(frozen=True)
class Counts:
    """``GET /lfc/prewarm``'s counts: pages in the state, loaded, and not loaded."""

    total: int
    prewarmed: int
    skipped: int


class Backend(Protocol):
    name: str

    async def save(self, conn: pgsession.Connection) -> bytes | None:
        """The cache state, uncompressed; ``None`` when there is nothing to save."""
        ...

    async def restore(self, conn: pgsession.Connection, state: bytes) -> Counts:
        """Load ``state`` into the cache."""
        ...


_NEON_PROBE = (
    "SELECT pg_catalog.to_regprocedure('neon.get_local_cache_state(integer)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('neon.prewarm_local_cache(bytea,integer)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('neon.get_prewarm_info()') IS NOT NULL"
)


async def choose(conn: pgsession.Connection, *, connect: Connect) -> Backend:
    """The backend for the database ``conn`` is in (the maintenance database)."""
    from compute_ctl.compute.lfc import neon, vanilla

    cur = await conn.execute(_NEON_PROBE)
    row = await cur.fetchone()
    if row is not None and row[0]:
        return neon.NeonBackend()
    return vanilla.VanillaBackend(connect=connect)
