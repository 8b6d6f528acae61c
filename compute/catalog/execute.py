"""Runs a plan: the only code that changes the catalog.

Phases run in order. Sequential phases run on the maintenance connection (or on a
session to the operation's database for the few operations that need one); the
per-database phase runs each database's operations on its own session, concurrently,
at most ``concurrency`` sessions at a time (Neon's cap, #10006/#12663). In the
create-and-alter-databases phase, operations on different databases (``Operation.key``)
overlap on up to ``concurrency`` maintenance sessions: ``CREATE DATABASE`` copies a
template and dominates a cold apply, and independent copies proceed in parallel.

Consecutive transactional operations on one session are sent as one batch in one
transaction (one round trip instead of hundreds). If a batch fails it rolled back
entirely; it is then replayed one operation at a time, so the error names the exact
phase and object and everything before it is applied. A failed apply leaves the
catalog where a fresh plan picks up: every operation is planned from observation.
Errors never carry secrets.

No statement waits long for a lock another session holds (a user's open transaction on
a role, say): sessions run with ``lock_timeout`` = ``LOCK_TIMEOUT_MS``, and a statement
that times out is retried with backoff until the caller's ``deadline``, so it never
queues in front of the users' own locks for long. Past the deadline the error names the
object. Cancelling the task (a termination) cancels the statement in the server too
(psycopg sends a cancel request when its wait is interrupted).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import db, tasks
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["run"]

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Pending = collections.deque[list[plan_mod.Operation]]
BATCH_OPERATIONS = 250
LOCK_TIMEOUT_MS = 1000
_LOCK_RETRY_FIRST_S = 0.1
_LOCK_RETRY_CAP_S = 2.0
_SECRET_RE = re.compile(r"SCRAM-SHA-256\$\S+|md5[0-9a-f]{32}")


def _describe(error: psycopg.Error) -> str:
    """The cause, as PostgreSQL states it, with its SQLSTATE (secrets redacted)."""
    message = getattr(error.diag, "message_primary", None) or str(error) or type(error).__name__
    if error.sqlstate:
        message = f"{message} (SQLSTATE {error.sqlstate})"
    return _SECRET_RE.sub(plan_mod.REDACTED, message)


def _failure(op: plan_mod.Operation, error: BaseException) -> errors.ApplyError:
    text = _describe(error) if isinstance(error, psycopg.Error) else str(error)
    if isinstance(error, psycopg.errors.LockNotAvailable):
        text = f"another session holds a lock it needs, retried until the deadline ({text})"
    return errors.ApplyError(
        f"{op.phase.value}: {op.comment} failed: {text}", phase=op.phase.value, obj=op.obj
    )


def _units(ops: Sequence[plan_mod.Operation]) -> list[list[plan_mod.Operation]]:
    """Group consecutive transactional operations into batches."""
    units: list[list[plan_mod.Operation]] = []
    for op in ops:
        if (
            op.transactional
            and units
            and units[-1][-1].transactional
            and len(units[-1]) < BATCH_OPERATIONS
        ):
            units[-1].append(op)
        else:
            units.append([op])
    return units


async def _execute(conn: Connection, ops: Sequence[plan_mod.Operation]) -> int:
    statements = [s for op in ops for s in op.statements]
    query = statements[0] if len(statements) == 1 else sql.SQL("; ").join(statements)
    if len(statements) == 1 and not ops[0].transactional:
        await conn.execute(query)
    else:
        async with conn.transaction():
            await conn.execute(query)
    return len(statements)


async def _execute_retrying(
    conn: Connection, ops: Sequence[plan_mod.Operation], *, deadline: float | None
) -> int:
    """``_execute``, retried while it times out waiting for a lock, until ``deadline``."""
    delay = _LOCK_RETRY_FIRST_S
    while True:
        try:
            return await _execute(conn, ops)
        except psycopg.errors.LockNotAvailable:
            if deadline is None or time.monotonic() + delay > deadline:
                raise
            logger.info("%s: %s waits for a lock; retrying", ops[0].phase.value, ops[0].comment)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _LOCK_RETRY_CAP_S)


async def _run_ops(
    conn: Connection, ops: Sequence[plan_mod.Operation], *, deadline: float | None
) -> int:
    executed = 0
    for unit in _units(ops):
        if logger.isEnabledFor(logging.DEBUG):
            for op in unit:
                logger.debug("%s: %s: %s", op.phase.value, op.comment, op.render())
        try:
            executed += await _execute_retrying(conn, unit, deadline=deadline)
            continue
        except psycopg.Error as e:
            if len(unit) == 1:
                raise _failure(unit[0], e) from e
            logger.info("a batch of %d operations failed; replaying one by one", len(unit))
        for op in unit:
            try:
                executed += await _execute_retrying(conn, [op], deadline=deadline)
            except psycopg.Error as e:
                raise _failure(op, e) from e
    return executed


async def _bound_lock_waits(conn: Connection) -> None:
    await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT_MS)))


@contextlib.asynccontextmanager
async def _session(
    connstr: str, *, database: str | None, phase: plan_mod.Phase
) -> AsyncIterator[Connection]:
    """``db.connect``, with a connection failure reported under ``phase``."""
    try:
        async with db.connect(connstr, dbname=database) as conn:
            await _bound_lock_waits(conn)
            yield conn
    except errors.ApplyError as e:
        if e.phase != db.CONNECT_PHASE:
            raise
        raise errors.ApplyError(f"{phase.value}: {e}", phase=phase.value, obj=e.obj) from e


async def _on_database(
    ops: Sequence[plan_mod.Operation],
    *,
    connstr: str,
    maintenance: Connection | None,
    deadline: float | None,
) -> int:
    database = ops[0].database
    if database is None and maintenance is not None:
        return await _run_ops(maintenance, ops, deadline=deadline)
    async with _session(connstr, database=database, phase=ops[0].phase) as conn:
        return await _run_ops(conn, ops, deadline=deadline)


def _runs(ops: Sequence[plan_mod.Operation]) -> list[list[plan_mod.Operation]]:
    """Consecutive operations on the same database, in plan order."""
    runs: list[list[plan_mod.Operation]] = []
    for op in ops:
        if runs and runs[-1][-1].database == op.database:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _by_database(ops: Sequence[plan_mod.Operation]) -> list[list[plan_mod.Operation]]:
    groups: dict[str | None, list[plan_mod.Operation]] = {}
    for op in ops:
        groups.setdefault(op.database, []).append(op)
    return list(groups.values())


def _segments(ops: Sequence[plan_mod.Operation]) -> list[list[list[plan_mod.Operation]]]:
    """Split at barriers (``key=None``); within a segment, group by key in plan order."""
    segments: list[list[list[plan_mod.Operation]]] = []
    groups: dict[str, list[plan_mod.Operation]] = {}
    for op in ops:
        if op.key is None:
            if groups:
                segments.append(list(groups.values()))
                groups = {}
            segments.append([[op]])
        else:
            groups.setdefault(op.key, []).append(op)
    if groups:
        segments.append(list(groups.values()))
    return segments


async def _run_keyed(
    ops: Sequence[plan_mod.Operation],
    *,
    connstr: str,
    concurrency: int,
    maintenance: Connection | None,
    deadline: float | None,
) -> int:
    executed = 0
    for groups in _segments(ops):
        if len(groups) == 1 or concurrency == 1:
            flat = [op for group in groups for op in group]
            executed += await _on_database(
                flat, connstr=connstr, maintenance=maintenance, deadline=deadline
            )
            continue
        pending: Pending = collections.deque(groups)
        phase = ops[0].phase

        async def worker(_: int, pending: Pending = pending, phase: plan_mod.Phase = phase) -> int:
            # One maintenance session per worker; workers take groups until none is left.
            count = 0
            async with _session(connstr, database=None, phase=phase) as conn:
                while pending:
                    count += await _run_ops(conn, pending.popleft(), deadline=deadline)
            return count

        workers = min(concurrency, len(groups))
        executed += sum(await tasks.bounded(worker, range(workers), limit=workers))
    return executed


async def run(
    plan: plan_mod.Plan,
    *,
    connstr: str,
    concurrency: int,
    maintenance: Connection | None = None,
    deadline: float | None = None,
) -> int:
    """Execute ``plan``; returns the number of statements executed.

    ``maintenance`` is an open ``db.connect`` session for ``database=None`` operations
    (one is opened per phase otherwise). Lock waits are retried until ``deadline``
    (``time.monotonic()``; None: retried forever). Raises ``ApplyError`` on the first
    failure.
    """
    if maintenance is not None:
        await _bound_lock_waits(maintenance)
    executed = 0
    for phase in plan_mod.PHASE_ORDER:
        ops = plan.phase(phase)
        if not ops:
            continue
        if phase.concurrent_keys:
            logger.info(
                "catalog phase %s: %d operations, up to %d sessions",
                phase.value,
                len(ops),
                concurrency,
            )
            executed += await _run_keyed(
                ops,
                connstr=connstr,
                concurrency=concurrency,
                maintenance=maintenance,
                deadline=deadline,
            )
            continue
        if phase.per_database:
            groups = _by_database(ops)
            logger.info(
                "catalog phase %s: %d operations in %d databases, %d at a time",
                phase.value,
                len(ops),
                len(groups),
                concurrency,
            )
            counts = await tasks.bounded(
                lambda group: _on_database(
                    group, connstr=connstr, maintenance=maintenance, deadline=deadline
                ),
                groups,
                limit=concurrency,
            )
            executed += sum(counts)
            continue
        logger.info("catalog phase %s: %d operations", phase.value, len(ops))
        for run_ops in _runs(ops):
            executed += await _on_database(
                run_ops, connstr=connstr, maintenance=maintenance, deadline=deadline
            )
    return executed
