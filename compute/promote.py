"""``/promote``: turn this replica into the primary, once, however many callers ask.

Neon's ``compute_promote.rs``. The node calls ``Promotion.join``; the SQL steps are here:

1. **Catch up**: poll ``pg_last_wal_replay_lsn()`` until it reaches ``wal_flush_lsn``
   (the old primary's last flush LSN), up to ``CATCH_UP_POLLS`` times ``CATCH_UP_S``
   apart (Neon: 21 polls, 1 s); this is ``lsn_wait_time_ms``.
2. **Promote** (``pg_promote_time_ms``), which differs by storage:

   - *Neon storage*: ``ALTER SYSTEM SET neon.safekeepers`` to the new spec's
     safekeepers and ``synchronous_standby_names = 'walproposer'`` (the walproposer
     is what acknowledges commits there), ``pg_reload_conf()``, ``pg_promote()``.
   - *Vanilla* (a replica of a vanilla primary, or no storage at all):
     ``ALTER SYSTEM RESET synchronous_standby_names``, reload, ``pg_promote()``.
     Neon's ``walproposer`` setting would make every commit wait forever for a
     standby of that name, which vanilla PostgreSQL never has; and a
     ``synchronous_standby_names`` the clone inherited from its old primary's
     ``postgresql.auto.conf`` names standbys that are not there either. A spec's own
     value (``cluster.settings``, in ``postgresql.conf``) still applies.

   Then the server must be out of recovery and ``transaction_read_only`` off.
3. **Reconfigure** with the new spec (mode Primary): the node's ``/configure`` path,
   so the configurator rewrites ``postgresql.conf``, reloads and applies the catalog
   (``reconfigure_time_ms``).

**Single flight** (``Promotion``): the first call starts the promotion as a task of its
own; every call, concurrent or later, waits on that task and gets its outcome, and the
promotion goes on if a caller disconnects. A completed promotion is kept, so every later
call answers the same. Unlike Neon, a failed one is not: the next call starts a new
attempt (Neon returns the failure until a restart), and a precondition that fails
(``refusal``: not a replica; on Neon storage, no LFC prewarm done or one still running;
the node adds: not running) is answered without starting one.

SQL values through ``psycopg.sql``; sessions through ``pgsession``. No HTTP here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

import psycopg
from psycopg import sql

from compute_ctl.compute import admission, errors, pgsession
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "APPLICATION_NAME",
    "CATCH_UP_POLLS",
    "CATCH_UP_S",
    "Outcome",
    "Promotion",
    "catch_up",
    "promote",
    "promote_server",
    "refusal",
]

logger = logging.getLogger(__name__)

CATCH_UP_POLLS = 21
CATCH_UP_S = 1.0
APPLICATION_NAME = "compute_ctl:promote"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Neon's ``PromoteState``: ``completed`` with the step timings, or ``failed``."""

    status: Literal["completed", "failed"]
    lsn_wait_time_ms: int = 0
    pg_promote_time_ms: int = 0
    reconfigure_time_ms: int = 0
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(status="failed", error=error)


_PREWARM_REFUSED = {"not_prewarmed": "NotPrewarmed", "prewarming": "Prewarming"}


def refusal(current: spec_mod.ComputeSpec, *, prewarm: str) -> str | None:
    """Why a compute running ``current`` may not be promoted (Neon's preconditions), or
    ``None``. ``prewarm`` is the LFC prewarm status (``/lfc/prewarm``'s)."""
    if current.mode.kind != "Replica":
        return f'compute mode "{current.mode.type_name}" is not replica'
    if not current.has_neon_storage():
        return None  # vanilla: postgres keeps its buffers through pg_promote(); no LFC to fill
    if prewarm in _PREWARM_REFUSED:
        return f"compute {_PREWARM_REFUSED[prewarm]}"
    if prewarm == "failed":
        logger.warning("promoting although the LFC prewarm failed")
    return None


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


async def _replayed(conn: pgsession.Connection) -> int | None:
    cur = await conn.execute("SELECT pg_catalog.pg_last_wal_replay_lsn()::text")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else spec_mod.lsn_to_int(str(row[0]))


async def catch_up(conn: pgsession.Connection, *, wal_flush_lsn: str) -> int:
    """Wait until the replay reaches ``wal_flush_lsn``; returns the milliseconds waited."""
    started = time.monotonic()
    target = spec_mod.lsn_to_int(wal_flush_lsn)
    for attempt in range(CATCH_UP_POLLS):
        replayed = await _replayed(conn)
        if replayed is not None and replayed >= target:
            return _ms(started)
        if attempt + 1 < CATCH_UP_POLLS:
            await asyncio.sleep(CATCH_UP_S)  # Neon's poll interval: the server has no wait
    raise errors.ComputeError(f"didn't catch up with primary in {CATCH_UP_POLLS - 1} retries")


async def promote_server(conn: pgsession.Connection, *, safekeepers: str | None) -> int:
    """ALTER SYSTEM, reload, ``pg_promote()``, check; returns the milliseconds taken.

    ``safekeepers``: the ``neon.safekeepers`` value on Neon storage; ``None`` on vanilla.
    """
    started = time.monotonic()
    if safekeepers is not None:
        await conn.execute(
            sql.SQL("ALTER SYSTEM SET neon.safekeepers = {}").format(sql.Literal(safekeepers))
        )
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'walproposer'")
    else:
        await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
    await conn.execute("SELECT pg_catalog.pg_reload_conf()")
    cur = await conn.execute("SELECT pg_catalog.pg_promote()")
    row = await cur.fetchone()
    if row is None or row[0] is not True:
        raise errors.ComputeError("pg_promote() failed")
    cur = await conn.execute("SELECT pg_catalog.pg_is_in_recovery()")
    in_recovery = await cur.fetchone()
    cur = await conn.execute("SHOW transaction_read_only")
    read_only = await cur.fetchone()
    if in_recovery != (False,) or read_only != ("off",):
        raise errors.ComputeError("replica in read only mode after promotion")
    return _ms(started)


async def promote(
    *,
    connstr: str,
    admitted: admission.Admitted,
    wal_flush_lsn: str,
    reconfigure: Callable[[], Awaitable[None]],
) -> Outcome:
    """Steps 1 to 3 on the local server at ``connstr``; ``reconfigure`` applies the new spec."""
    neon = admitted.storage.neon
    safekeepers = neon.safekeepers.conf_value() if neon is not None else None
    async with pgsession.connect(connstr, application_name=APPLICATION_NAME) as conn:
        lsn_wait_ms = await catch_up(conn, wal_flush_lsn=wal_flush_lsn)
        promote_ms = await promote_server(conn, safekeepers=safekeepers)
    logger.info("promoted to primary in %d ms; reconfiguring with the new spec", promote_ms)
    started = time.monotonic()
    await reconfigure()
    return Outcome(
        status="completed",
        lsn_wait_time_ms=lsn_wait_ms,
        pg_promote_time_ms=promote_ms,
        reconfigure_time_ms=_ms(started),
    )


class Promotion:
    """One promotion per process, shared by every caller."""

    def __init__(
        self, *, spawn: Callable[[Coroutine[Any, Any, Outcome]], asyncio.Task[Outcome]]
    ) -> None:
        self._spawn = spawn
        self._task: asyncio.Task[Outcome] | None = None

    @property
    def started(self) -> bool:
        """A promotion runs, or completed (callers join it instead of starting one)."""
        task = self._task
        if task is None:
            return False
        if not task.done():
            return True
        if task.cancelled() or task.exception() is not None:
            return False
        return task.result().status == "completed"

    async def join(self, start: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """The running or completed promotion's outcome; else start one with ``start``."""
        if not self.started:
            self._task = self._spawn(_guarded(start))
        assert self._task is not None
        return await asyncio.shield(self._task)


async def _guarded(start: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """Every error becomes a failed outcome with its message (never a secret)."""
    try:
        return await start()
    except (errors.ComputeError, psycopg.Error, OSError, TimeoutError) as e:
        message = _message(e)
        logger.error("promotion failed: %s", message)
        return Outcome.failed(message)


def _message(error: BaseException) -> str:
    if isinstance(error, psycopg.Error):
        return f"postgres: {error.diag.message_primary or type(error).__name__}"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error)
