"""Catalog sessions: ``pgsession``'s hardened policy, checked to really be superuser.

The policy itself (hostile per-database and per-role settings defeated, statement text
kept out of the server log) is ``compute.pgsession``'s, shared with every other local
connection. This module adds what catalog work needs on top: the session is checked to
be a superuser session before it is used, and failing to connect raises ``ApplyError``
with phase ``connect``. Only ``observe``, ``execute`` and ``settings`` open connections,
always through ``connect``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg

from compute_ctl.compute import errors, pgsession

__all__ = [
    "APPLICATION_NAME",
    "CONNECT_PHASE",
    "connect",
]

APPLICATION_NAME = "compute_ctl"
CONNECT_PHASE = "connect"


@contextlib.asynccontextmanager
async def connect(
    connstr: str, *, dbname: str | None = None
) -> AsyncIterator[pgsession.Connection]:
    """A checked superuser session on ``dbname`` (default: the connection string's)."""
    where = f"database {dbname!r}" if dbname is not None else "the maintenance database"
    try:
        conn = await pgsession.open_session(
            connstr, application_name=APPLICATION_NAME, dbname=dbname
        )
    except (psycopg.Error, OSError, TimeoutError) as e:
        raise errors.ApplyError(
            f"cannot connect to {where}: {e}", phase=CONNECT_PHASE, obj=where
        ) from e
    try:
        cur = await conn.execute("SELECT pg_catalog.current_setting('is_superuser')")
        row = await cur.fetchone()
        if row is None or row[0] != "on":
            raise errors.ApplyError(
                f"the session to {where} is not a superuser session",
                phase=CONNECT_PHASE,
                obj=where,
            )
        yield conn
    finally:
        await conn.close()
