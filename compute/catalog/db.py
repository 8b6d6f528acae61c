"""Catalog sessions: ``pgsession``'s hardened policy, checked to really be superuser.

The policy itself (hostile per-database and per-role settings defeated, statement text
kept out of the server log) is ``compute.pgsession``'s, shared with every other local
connection. This module adds what catalog work needs on top: the session is checked to
be a superuser session before it is used, and failing to connect raises ``ApplyError``
with phase ``connect``. Only ``observe``, ``execute`` and ``settings`` open connections,
always through ``connect``.

``shared()``: inside the block, every ``connect`` to the maintenance database (no
``dbname``) of the same connection string hands out one session. A reconfiguration reads
the conf report, the catalog and ``pg_settings`` through it. The session is borrowed
from a ``pgsession.KeptSession`` (``kept()``; the node keeps one for the life of its
postgres, so a reconfiguration forks no backend), or opened for the block and closed
with it. Sessions to other databases are never shared, nor (inside ``unshared()``) the
executor's: its statements may change session state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
from collections.abc import AsyncIterator, Iterator

import psycopg

from compute_ctl.compute import errors, pgsession

__all__ = [
    "APPLICATION_NAME",
    "CONNECT_PHASE",
    "connect",
    "current",
    "kept",
    "shared",
    "unshared",
]

APPLICATION_NAME = "compute_ctl"
CONNECT_PHASE = "connect"


@dataclasses.dataclass
class _Shared:
    connstr: str
    kept: pgsession.KeptSession
    stack: contextlib.AsyncExitStack
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    conn: pgsession.Connection | None = None
    # False once the block ended: a task it spawned (it inherits the context) opens its
    # own sessions then, rather than one nobody would close.
    active: bool = True


_SHARED: contextvars.ContextVar[_Shared | None] = contextvars.ContextVar(
    "compute_ctl_shared_session", default=None
)


def kept(connstr: str) -> pgsession.KeptSession:
    """A maintenance-database session to keep between ``shared`` blocks (checked to be a
    superuser session whenever it is opened); its owner closes it."""
    return pgsession.KeptSession(
        connstr, application_name=APPLICATION_NAME, on_open=_check_superuser
    )


@contextlib.asynccontextmanager
async def shared(
    connstr: str, *, session: pgsession.KeptSession | None = None
) -> AsyncIterator[None]:
    """One maintenance-database session for every ``connect(connstr)`` in the block:
    ``session``'s (``kept``), or one opened on first use and closed with the block."""
    own = session is None
    holder = _Shared(
        connstr=connstr, kept=session or kept(connstr), stack=contextlib.AsyncExitStack()
    )
    try:
        # ``connect`` enters the borrow into ``stack`` on first use: an error leaving the
        # block reaches it, and the kept session is dropped rather than used again.
        async with holder.stack:
            token = _SHARED.set(holder)
            try:
                yield
            finally:
                _SHARED.reset(token)
                holder.active = False
    finally:
        if own:
            await holder.kept.close()


def current(connstr: str) -> pgsession.Connection | None:
    """The block's shared session to ``connstr``, if it is open (never opens one)."""
    holder = _SHARED.get()
    if holder is None or not holder.active or holder.connstr != connstr or holder.conn is None:
        return None
    return None if holder.conn.closed else holder.conn


@contextlib.contextmanager
def unshared() -> Iterator[None]:
    """Inside ``shared()``: ``connect`` opens sessions of its own again."""
    token = _SHARED.set(None)
    try:
        yield
    finally:
        _SHARED.reset(token)


@contextlib.asynccontextmanager
async def connect(
    connstr: str, *, dbname: str | None = None
) -> AsyncIterator[pgsession.Connection]:
    """A checked superuser session on ``dbname`` (default: the connection string's);
    the block's shared one inside ``shared(connstr)``."""
    holder = _SHARED.get()
    if holder is None or not holder.active or dbname is not None or holder.connstr != connstr:
        async with _connect(connstr, dbname=dbname) as conn:
            yield conn
        return
    async with holder.lock:
        if holder.conn is None:
            try:
                holder.conn = await holder.stack.enter_async_context(holder.kept.borrow())
            except (psycopg.Error, OSError, TimeoutError) as e:
                raise _connect_error("the maintenance database", e) from e
        conn = holder.conn
    yield conn


def _connect_error(where: str, e: BaseException) -> errors.ApplyError:
    return errors.ApplyError(f"cannot connect to {where}: {e}", phase=CONNECT_PHASE, obj=where)


async def _check_superuser(
    conn: pgsession.Connection, where: str = "the maintenance database"
) -> None:
    # ``is_superuser`` is reported by the server at start-up and on every change: no
    # round trip (the query is for a server that would not report it).
    value = conn.info.parameter_status("is_superuser")
    if value is None:
        cur = await conn.execute("SELECT pg_catalog.current_setting('is_superuser')")
        row = await cur.fetchone()
        value = None if row is None else str(row[0])
    if value != "on":
        raise errors.ApplyError(
            f"the session to {where} is not a superuser session", phase=CONNECT_PHASE, obj=where
        )


@contextlib.asynccontextmanager
async def _connect(
    connstr: str, *, dbname: str | None = None
) -> AsyncIterator[pgsession.Connection]:
    """A checked superuser session on ``dbname`` (default: the connection string's)."""
    where = f"database {dbname!r}" if dbname is not None else "the maintenance database"
    try:
        conn = await pgsession.open_session(
            connstr, application_name=APPLICATION_NAME, dbname=dbname
        )
    except (psycopg.Error, OSError, TimeoutError) as e:
        raise _connect_error(where, e) from e
    try:
        await _check_superuser(conn, where)
        yield conn
    finally:
        await conn.close()
