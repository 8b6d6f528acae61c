"""The one connection policy for catalog work: superuser sessions that ignore hostile
per-database and per-role settings.

A database or role can carry settings (``ALTER DATABASE d SET role = 'x'``,
``search_path``, ``statement_timeout = 1``, ``default_transaction_read_only = on``,
``client_encoding``...) that would make our DDL run as someone else, resolve names in
a user's schema, time out or fail (Neon #11827, #12773). Settings sent in the startup
packet take precedence over both, so every session we open sends its own values:
``role=none`` resets to the login (superuser) role, whatever the database says.

Sessions are autocommit, named ``compute_ctl`` in ``pg_stat_activity``, and are checked
to really be superuser before they are used; failing to connect raises ``ApplyError``
with phase ``connect``. Only ``observe``, ``execute`` and
``settings`` open connections, always through ``connect``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg import conninfo

from compute_ctl.compute import errors

__all__ = [
    "APPLICATION_NAME",
    "CONNECT_PHASE",
    "SESSION_SETTINGS",
    "connect",
    "session_conninfo",
]

APPLICATION_NAME = "compute_ctl"
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
    # Our DDL carries password verifiers: never let the server log its text, whatever the
    # spec sets (log_statement = all) or when a statement fails (log_min_error_statement).
    # compute_ctl re-logs postgres's stderr, so a logged statement would reach our logs.
    ("log_statement", "none"),
    ("log_min_error_statement", "panic"),
    ("log_min_duration_statement", "-1"),
    # Placeholders on vanilla PostgreSQL; with Neon's extensions loaded they stop DDL
    # from being forwarded to the control plane and keep our DDL out of audit logs.
    ("neon.forward_ddl", "false"),
    ("pgaudit.log", "none"),
)
CONNECT_TIMEOUT = 10
CONNECT_PHASE = "connect"


def _options() -> str:
    # libpq splits options on whitespace; none of our values contains any.
    return " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS)


def session_conninfo(connstr: str, *, dbname: str | None = None) -> str:
    """``connstr`` with our options appended (the later ``-c`` wins) and ``dbname`` set."""
    params = conninfo.conninfo_to_dict(connstr)
    existing = str(params.get("options") or "").strip()
    params["options"] = f"{existing} {_options()}".strip()
    params["application_name"] = APPLICATION_NAME
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    if dbname is not None:
        params["dbname"] = dbname
    return conninfo.make_conninfo("", **params)


@contextlib.asynccontextmanager
async def connect(
    connstr: str, *, dbname: str | None = None
) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    """A checked superuser session on ``dbname`` (default: the connection string's)."""
    where = f"database {dbname!r}" if dbname is not None else "the maintenance database"
    try:
        conn = await psycopg.AsyncConnection.connect(
            session_conninfo(connstr, dbname=dbname), autocommit=True
        )
    except psycopg.Error as e:
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
