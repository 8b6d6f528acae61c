"""LSN leases for Static computes: keep the pageservers from collecting the pinned LSN.

Neon's ``lsn_lease.rs`` (libpq flavour). A compute in ``Static`` mode reads its
timeline at one LSN; the pageserver may garbage-collect history below its GC cutoff
unless a lease holds the LSN. ``LeaseKeeper.run`` is the background task the node
starts once the spec is known (before postgres starts), for a Static spec on Neon
storage:

- **One round** asks every pageserver of every shard, concurrently:
  ``lease lsn <tenant_shard_id> <timeline_id> <lsn> `` (simple protocol, trailing
  space), where ``tenant_shard_id`` is the bare tenant for an unsharded tenant
  (``shard_count`` 0), else ``<tenant>-<NNCC>`` (shard number and count, two hex digits
  each). The answer is one ``valid_until`` row: milliseconds since the epoch, or NULL
  when the LSN is below the GC cutoff (not granted). The round's expiry is the minimum
  over all answers; any error fails the round, any NULL makes it refused. Each round
  re-reads the pageserver info and storage token from the compute state (the desired
  spec, which ``/configure`` replaces); the LSN is the one the compute started at.
- **Renewal**: with ``valid = expiry - now``, sleep ``max(valid - 60 s, valid / 2)``.
- **Errors** (connect, query, parse) retry forever: 0.5 s, then x1.5 per attempt,
  capped at 60 s.
- Every sleep ends early when the pageserver info in the state changes.
- **Refused**: a warning, then the task ends for good; the compute keeps running.

Beyond Neon: each pageserver call is bounded (``CALL_TIMEOUT``), so a pageserver that
accepts the connection and never answers cannot stall renewals; Neon waits forever.
gRPC (``prefer_protocol: grpc``) is not implemented: the libpq URLs are used whatever
the preference, and a pageserver without one fails the round (retried).

Owns the lease protocol and its timing; knows nothing of the node or HTTP. Never logs
or raises the token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

import psycopg

from compute_ctl.compute import errors
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.storage import conninfo, libpq

__all__ = [
    "CALL_TIMEOUT",
    "LeaseKeeper",
    "LeaseRefused",
    "LeaseRequest",
    "Target",
    "acquire",
    "lease_query",
    "lease_request",
    "renew_after",
    "retry_delay",
    "wants_lease",
]

logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_FACTOR = 1.5
RETRY_CAP_S = 60.0
RENEW_MARGIN_S = 60.0
CALL_TIMEOUT = 30.0
"""Seconds for one pageserver's connect and answer (beyond Neon: unbounded there)."""


class LeaseRefused(errors.StorageError):
    """A pageserver answered NULL: the LSN is behind its GC cutoff. Permanent."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One pageserver of one shard, and the id the lease names that shard by."""

    tenant_shard_id: str
    url: str | None


@dataclasses.dataclass(frozen=True)
class LeaseRequest:
    """Everything one round needs, read from the spec at the round's start."""

    targets: tuple[Target, ...]
    timeline: str
    lsn: str
    token: str | None = dataclasses.field(repr=False)  # storage_auth_token: never shown


def wants_lease(spec: spec_mod.ComputeSpec) -> bool:
    """Neon starts the lease task for a Static spec (on Neon storage, the only kind
    with a pageserver to ask)."""
    return spec.mode.kind == "Static" and spec.has_neon_storage()


def _shard_urls(spec: spec_mod.ComputeSpec) -> tuple[int, list[tuple[int, str | None]]]:
    """``(shard_count, [(shard number, libpq url), ...])``: every pageserver of every shard."""
    info = spec.pageserver_connection_info
    if info is not None:
        urls: list[tuple[int, str | None]] = []
        for number in range(max(info.shard_count, 1)):
            shard = info.shards.get(conninfo.shard_index(number, info.shard_count))
            if shard is None:
                raise errors.ConfigError(f"shard {number} missing from pageserver_connection_info")
            urls += [(number, ps.libpq_url) for ps in shard.pageservers]
        return info.shard_count, urls
    pageservers = conninfo.pageservers(spec)
    if pageservers is None:
        raise errors.ConfigError("pageserver connection info should be provided")
    return pageservers.shard_count, [(s.number, s.libpq_url) for s in pageservers.shards]


def lease_request(spec: spec_mod.ComputeSpec, *, lsn: str) -> LeaseRequest:
    """A round's request: ``lsn`` on the pageservers ``spec`` names now."""
    tenant, timeline = conninfo.tenant_timeline(spec)
    if tenant is None or timeline is None:
        raise errors.ConfigError("an LSN lease needs a tenant and a timeline")
    count, urls = _shard_urls(spec)
    targets = tuple(
        Target(
            tenant_shard_id=tenant if count == 0 else f"{tenant}-{conninfo.shard_index(n, count)}",
            url=url,
        )
        for n, url in urls
    )
    return LeaseRequest(targets=targets, timeline=timeline, lsn=lsn, token=spec.storage_auth_token)


def lease_query(*, tenant_shard_id: str, timeline: str, lsn: str) -> str:
    """Neon's command text, trailing space included; the LSN in upper-case hex."""
    return f"lease lsn {tenant_shard_id} {timeline} {spec_mod.parse_lsn(lsn)} "


def renew_after(valid: float) -> float:
    """Seconds to sleep after a lease valid for ``valid`` more seconds."""
    valid = max(valid, 0.0)
    return max(valid - RENEW_MARGIN_S, valid / 2)


def retry_delay(attempt: int) -> float:
    """The wait after failed attempt number ``attempt`` (1, 2, ...)."""
    return min(RETRY_CAP_S, RETRY_FIRST_S * RETRY_FACTOR ** max(attempt - 1, 0))


async def _lease_one(target: Target, request: LeaseRequest, *, timeout: float) -> int | None:
    """One pageserver's ``valid_until`` (ms since the epoch), ``None`` if not granted."""
    if target.url is None:
        raise errors.StorageError(f"shard {target.tenant_shard_id}: pageserver has no libpq_url")
    kwargs = {"password": request.token} if request.token is not None else {}
    dsn = psycopg.conninfo.make_conninfo(target.url, **kwargs)
    query = lease_query(
        tenant_shard_id=target.tenant_shard_id, timeline=request.timeline, lsn=request.lsn
    )
    deadline = time.monotonic() + timeout
    async with asyncio.timeout(timeout):
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def ask() -> tuple[bool, tuple[object, ...] | None]:
        cur = await conn.execute(query)
        if cur.description is None:
            return False, None
        return True, await cur.fetchone()

    async with conn:
        is_rows, row = await libpq.bounded(conn, ask, timeout=max(deadline - time.monotonic(), 0.0))
    if not is_rows or row is None or len(row) != 1:
        raise errors.StorageError(f"shard {target.tenant_shard_id}: no valid_until row")
    if row[0] is None:
        return None
    try:
        return int(str(row[0]))
    except ValueError:
        raise errors.StorageError(
            f"shard {target.tenant_shard_id}: valid_until is not a number"
        ) from None


async def acquire(request: LeaseRequest, *, timeout: float = CALL_TIMEOUT) -> float:
    """One round: the earliest expiry over every target, as epoch seconds.

    Raises ``LeaseRefused`` if any pageserver refused, else the first error."""
    if not request.targets:
        raise errors.StorageError("no pageserver to lease from")
    answers = await asyncio.gather(
        *(_lease_one(t, request, timeout=timeout) for t in request.targets),
        return_exceptions=True,
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    if any(a is None for a in answers):
        raise LeaseRefused("lease could not be obtained, LSN is behind the GC cutoff")
    return min(int(a) for a in answers if isinstance(a, int)) / 1000.0


def _where(spec: spec_mod.ComputeSpec | None) -> object:
    """What, in the state's spec, says where the pageservers are (compared for changes)."""
    if spec is None:
        return None
    return (
        spec.pageserver_connection_info,
        spec.pageserver_connstring,
        spec.cluster.setting("neon.pageserver_connstring"),
    )


class LeaseKeeper:
    """The lease task of one Static compute, and what it last saw (for logs and tests)."""

    def __init__(
        self,
        *,
        state: state_mod.ComputeState,
        lsn: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.lsn = lsn  # the Static LSN the compute started at: fixed for its life
        self.clock = clock
        self.valid_until: float | None = None  # epoch seconds of the current lease
        self.rounds = 0  # successful rounds
        self.failures = 0  # consecutive failed rounds
        self.last_error: str | None = None
        self.refused = False

    async def run(self) -> None:
        """Lease, renew and retry until refused (or cancelled with the compute)."""
        while True:
            async with self.state.lock() as s:
                spec = s.desired
            where = _where(spec)
            try:
                if spec is None:
                    raise errors.ConfigError("no spec")
                expiry = await acquire(lease_request(spec, lsn=self.lsn))
            except LeaseRefused as e:
                self.refused, self.last_error = True, str(e)
                logger.warning("LSN lease task exited with error: %s", e)
                return
            except (errors.ComputeError, psycopg.Error, OSError, TimeoutError) as e:
                self.failures += 1
                self.last_error = _describe(e)
                delay = retry_delay(self.failures)
                logger.warning(
                    "LSN lease attempt %d failed, retrying in %.1f s: %s",
                    self.failures,
                    delay,
                    self.last_error,
                )
                await self._sleep(delay, where=where)
                continue
            self.failures, self.last_error = 0, None
            self.rounds += 1
            self.valid_until = expiry
            sleep = renew_after(expiry - self.clock())
            logger.info(
                "LSN lease valid for %.0f s; renewing in %.0f s", expiry - self.clock(), sleep
            )
            await self._sleep(sleep, where=where)

    async def _sleep(self, seconds: float, *, where: object) -> None:
        """Sleep, or wake as soon as the pageserver info in the state changes."""
        try:
            await self.state.wait_for(lambda s: _where(s.desired) != where, timeout=seconds)
        except TimeoutError:
            return
        logger.info("pageserver connection info changed; renewing the LSN lease now")


def _describe(error: BaseException) -> str:
    """One line; libpq's messages never carry the password."""
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
