"""The commit LSN of a primary: ask the safekeepers, or make them agree.

Neon's two paths (``compute.rs``):

- **Fast path** (``sync_sk_check_ms``): ``TIMELINE_STATUS`` on every safekeeper at
  once (``postgresql://no_user@host:port``, options ``-c timeline_id=<tl>
  tenant_id=<t>``, the storage token as password, 100 ms each), stopping at a quorum
  of ``n/2+1`` replies or of ``n/2+1`` failures. It gives an LSN only if every reply
  knows the timeline, all agree on ``commit_lsn`` and on ``flush_lsn``, and
  ``commit_lsn == flush_lsn``. Any failure just means "not known to be synced".
- **Slow path** (``sync_safekeepers_ms``): ``postgres --sync-safekeepers`` with env
  ``PGDATA`` (it reads ``neon.safekeepers`` from ``postgresql.conf``; ``-D`` is not
  accepted in that mode) and ``NEON_AUTH_TOKEN``; it logs to stderr and prints the
  LSN on stdout. Up to 5 retries, ``min(1.1^n, 3)`` seconds apart.

The postgres binary for the slow path is a parameter: only Neon's fork knows
``--sync-safekeepers``. This module never logs or raises the token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psycopg

from compute_ctl.compute import errors, pgtools
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import libpq

__all__ = [
    "MAX_SYNC_RETRIES",
    "TIMELINE_STATUS_TIMEOUT",
    "TimelineStatus",
    "check_if_synced",
    "sync_backoff",
    "sync_safekeepers",
    "sync_with_retries",
    "timeline_status",
    "timeline_status_lsn",
]

logger = logging.getLogger(__name__)

TIMELINE_STATUS_TIMEOUT = 0.1
"""Seconds per safekeeper for the fast path (Neon's 100 ms)."""

MAX_SYNC_RETRIES = 5


@dataclasses.dataclass(frozen=True)
class TimelineStatus:
    """One safekeeper's ``TIMELINE_STATUS`` row (LSNs as integers)."""

    flush_lsn: int
    commit_lsn: int


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def check_if_synced(responses: Sequence[TimelineStatus | None]) -> str | None:
    """Neon's ``check_if_synced``: the common LSN, or ``None`` when not provably synced.

    ``None`` in ``responses`` is a safekeeper that does not know the timeline.
    """
    if not responses or any(r is None for r in responses):
        return None
    known = [r for r in responses if r is not None]
    commits = {r.commit_lsn for r in known}
    flushes = {r.flush_lsn for r in known}
    if len(commits) != 1 or len(flushes) != 1:
        return None
    (commit,) = commits
    (flush,) = flushes
    if commit != flush:
        return None
    return format_lsn(commit)


async def timeline_status(
    connstring: str,
    *,
    tenant: str,
    timeline: str,
    token: str | None,
    timeout: float | None = None,
) -> TimelineStatus | None:
    """Ask one safekeeper; ``None`` when it has no row (the timeline is unknown there)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    kwargs: dict[str, str] = {"options": f"-c timeline_id={timeline} tenant_id={tenant}"}
    if token is not None:
        kwargs["password"] = token
    dsn = psycopg.conninfo.make_conninfo(f"postgresql://no_user@{connstring}", **kwargs)
    async with asyncio.timeout(timeout):
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def query() -> tuple[list[str], tuple[object, ...] | None]:
        cur = await conn.execute("TIMELINE_STATUS")
        return [c.name for c in cur.description or ()], await cur.fetchone()

    async with conn:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        names, row = await libpq.bounded(conn, query, timeout=remaining)
    if row is None:
        return None
    values = dict(zip(names, row, strict=True))
    try:
        return TimelineStatus(
            flush_lsn=spec_mod.lsn_to_int(str(values["flush_lsn"])),
            commit_lsn=spec_mod.lsn_to_int(str(values["commit_lsn"])),
        )
    except (KeyError, ValueError) as e:
        raise errors.StorageError(f"safekeeper {connstring}: bad TIMELINE_STATUS row") from e


async def timeline_status_lsn(
    connstrings: Sequence[str],
    *,
    tenant: str,
    timeline: str,
    token: str | None,
    timeout: float | None = None,
) -> str | None:
    """The fast path: the synced commit LSN, or ``None`` (then sync the slow way)."""
    if not connstrings:
        return None
    per_call = TIMELINE_STATUS_TIMEOUT if timeout is None else timeout
    quorum = len(connstrings) // 2 + 1

    async def ask(connstring: str) -> TimelineStatus | None:
        return await timeline_status(
            connstring, tenant=tenant, timeline=timeline, token=token, timeout=per_call
        )

    tasks = [asyncio.create_task(ask(c)) for c in connstrings]
    responses: list[TimelineStatus | None] = []
    failures = 0
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                responses.append(await next_done)
            except (OSError, psycopg.Error, errors.StorageError, TimeoutError) as e:
                failures += 1
                logger.info("safekeeper TIMELINE_STATUS failed: %s", type(e).__name__)
            if len(responses) >= quorum or failures >= quorum:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if len(responses) < quorum:
        logger.info(
            "safekeeper fast path: %d replies, %d failures, quorum %d: not synced",
            len(responses),
            failures,
            quorum,
        )
        return None
    lsn = check_if_synced(responses)
    if lsn is None:
        logger.info("safekeeper fast path: replies disagree or a timeline is unknown")
    return lsn


async def sync_safekeepers(
    *,
    pgbin: Path,
    pgdata: Path,
    tools: pgtools.PgTools,
    token: str | None,
) -> str:
    """Run ``<pgbin> --sync-safekeepers`` once; return the LSN it prints."""
    env = {"PGDATA": os.fspath(pgdata)}
    if token is not None:
        env["NEON_AUTH_TOKEN"] = token
    proc = await tools.spawn([pgbin, "--sync-safekeepers"], env=env)
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        # Neon SIGTERMs a running sync on /terminate; we are cancelled instead.
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        raise
    for line in err.decode(errors="replace").splitlines():
        logger.info("sync-safekeepers: %s", line)
    if proc.returncode != 0:
        raise errors.StorageError(
            f"postgres --sync-safekeepers exited with code {proc.returncode}: "
            f"{err.decode(errors='replace').strip()[-500:]}"
        )
    text = out.decode(errors="replace").strip()
    try:
        return spec_mod.parse_lsn(text)
    except ValueError as e:
        raise errors.StorageError(
            f"postgres --sync-safekeepers printed no LSN (stdout {text[:80]!r})"
        ) from e


def sync_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1-based): ``min(1.1^attempt, 3)``."""
    return float(min(1.1**attempt, 3.0))


async def sync_with_retries(
    *,
    pgbin: Path,
    pgdata: Path,
    tools: pgtools.PgTools,
    token: str | None,
    max_retries: int = MAX_SYNC_RETRIES,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str:
    """``sync_safekeepers`` with Neon's retries; the last error is raised."""
    attempt = 0
    while True:
        try:
            lsn = await sync_safekeepers(pgbin=pgbin, pgdata=pgdata, tools=tools, token=token)
        except (errors.StorageError, OSError) as e:
            if attempt >= max_retries:
                raise
            attempt += 1
            delay = sync_backoff(attempt)
            logger.warning(
                "sync-safekeepers failed (attempt %d of %d), retrying in %.2f s: %s",
                attempt,
                max_retries + 1,
                delay,
                e,
            )
            await sleep(delay)
            continue
        if attempt:
            logger.info("sync-safekeepers succeeded after %d retries", attempt)
        return lsn
