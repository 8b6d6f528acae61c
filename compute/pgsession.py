"""The one session policy of every local PostgreSQL connection compute_ctl opens.

The catalog apply, the HTTP handlers, the readiness probe, the activity monitor, the
vm-monitor's file cache and the reload check all connect through ``conninfo`` or
``connect`` here, so they share one policy, whoever calls it:

- **Hostile settings are defeated.** A database or role can carry settings
  (``ALTER DATABASE d SET role = 'x'``, ``search_path``, ``statement_timeout = 1``,
  ``default_transaction_read_only = on``, ``client_encoding``...) that would make our SQL
  run as someone else, resolve names in a user's schema, time out or fail (Neon #11827,
  #12773). Settings sent in the startup packet take precedence over both, so every session
  sends its own values; ``role=none`` resets to the login (superuser) role.
- **Secrets stay out of the server log.** Our SQL can carry password verifiers, and
  compute_ctl re-logs postgres's stderr: ``log_statement = none`` and
  ``log_min_error_statement = panic`` keep any statement text out of the log, whatever
  the spec or a user sets (``ALTER SYSTEM``, ``ALTER ROLE ... SET``).
- Sessions are autocommit and named in ``pg_stat_activity`` by their caller
  (``compute_ctl``, ``compute_ctl:http``...).
- ``KeptSession``: one session kept open between uses (the reconfigurations' reads), so
  a use costs no backend fork, authentication or conninfo parsing. Before each use it is
  reset to the policy (``RESET``: role, session authorization and every setting back to
  the startup packet's values) in the same round trip that proves it alive; a broken one
  (killed backend, postgres restarted) is replaced once, transparently. A use that
  raised, or that left the session in a transaction, closes it: the next one opens anew.

This module knows nothing of the catalog or HTTP: callers translate its ``psycopg`` errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import conninfo as conninfo_mod
from psycopg import pq

__all__ = [
    "SESSION_SETTINGS",
    "Connection",
    "KeptSession",
    "connect",
    "conninfo",
    "open_session",
]

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("role", "none"),
    ("default_transaction_read_only", "off"),
    ("search_path", ""),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("default_tablespace", ""),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("client_min_messages", "warning"),
    # Never let the server log our statements' text: not with log_statement = all, not
    # when a statement fails (log_min_error_statement), not when it is slow.
    ("log_statement", "none"),
    ("log_min_error_statement", "panic"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_parameter_max_length", "0"),
    ("log_parameter_max_length_on_error", "0"),
    # Placeholders on vanilla PostgreSQL; with Neon's extensions loaded they stop DDL
    # from being forwarded to the control plane and keep our SQL out of audit logs.
    ("neon.forward_ddl", "false"),
    ("pgaudit.log", "none"),
)
CONNECT_TIMEOUT = 10


def _options() -> str:
    # libpq splits options on whitespace; none of our values contains any.
    return " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS)


def conninfo(
    connstr: str,
    *,
    application_name: str,
    dbname: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> str:
    """``connstr`` with our options appended (the later ``-c`` wins) and ``dbname`` set."""
    params = conninfo_mod.conninfo_to_dict(connstr)
    existing = str(params.get("options") or "").strip()
    params["options"] = f"{existing} {_options()}".strip()
    params["application_name"] = application_name
    params["connect_timeout"] = max(1, int(connect_timeout))
    if dbname is not None:
        params["dbname"] = dbname
    return conninfo_mod.make_conninfo("", **params)


async def open_session(
    connstr: str,
    *,
    application_name: str,
    dbname: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Connection:
    """An open autocommit session under the policy; the caller closes it.

    Every failure to connect, a timeout included, is a ``psycopg.OperationalError``.
    """
    info = conninfo(
        connstr, application_name=application_name, dbname=dbname, connect_timeout=timeout
    )
    return await _open(info, timeout=timeout)


async def _open(info: str, *, timeout: float) -> Connection:
    # libpq's connect_timeout applies per address; the outer bound covers them all.
    try:
        async with asyncio.timeout(timeout + 1):
            return await psycopg.AsyncConnection.connect(info, autocommit=True)
    except TimeoutError:
        raise psycopg.OperationalError(f"connection timed out after {timeout:.0f} s") from None


@contextlib.asynccontextmanager
async def connect(
    connstr: str,
    *,
    application_name: str,
    dbname: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> AsyncIterator[Connection]:
    """``open_session``, closed on exit."""
    conn = await open_session(
        connstr, application_name=application_name, dbname=dbname, timeout=timeout
    )
    try:
        yield conn
    finally:
        await conn.close()


# Back to the startup packet's values (SESSION_SETTINGS included: they are the reset
# values), as the login role; one simple-protocol round trip.
_RESET = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL"


class KeptSession:
    """One session under the policy, kept open between ``borrow`` blocks (one at a time).

    ``on_open`` runs on every new session before its first use (a check that may raise).
    Connection failures are ``psycopg.OperationalError``, as ``open_session``'s.
    """

    def __init__(
        self,
        connstr: str,
        *,
        application_name: str,
        on_open: Callable[[Connection], Awaitable[None]] | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        # Parsed once: libpq's conninfo parsing is a visible part of a use's CPU time.
        self._info = conninfo(connstr, application_name=application_name, connect_timeout=timeout)
        self._timeout = timeout
        self._on_open = on_open
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None
        self._close_after_use = False

    @property
    def backend_pid(self) -> int | None:
        """The kept session's backend, if one is open (tests, diagnostics)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[Connection]:
        """The session, reset, for this block only; closed if the block raises or leaves
        a transaction open."""
        async with self._lock:
            try:
                conn = await self._ready()
                yield conn
            except BaseException:
                self._close_after_use = False
                await self._drop()
                raise
            if (
                self._close_after_use
                or conn.closed
                or conn.info.transaction_status != pq.TransactionStatus.IDLE
            ):
                self._close_after_use = False
                await self._drop()

    async def close(self) -> None:
        """Close the kept session (postgres stops or restarts); a later ``borrow`` opens
        a new one. A block in progress keeps its session until it ends, then closes it."""
        if self._lock.locked():
            self._close_after_use = True
        else:
            await self._drop()

    async def _ready(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                await conn.execute(_RESET)
                return conn
            except psycopg.Error:  # the backend is gone: reconnect, once
                await self._drop()
        conn = await _open(self._info, timeout=self._timeout)
        try:
            if self._on_open is not None:
                await self._on_open(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
