"""The one state record of a compute, its status machine, and the only way to wait on it.

Owns ``ComputeStatus`` (Neon's snake_case wire values), the transition table, and
``ComputeState``: status, desired and applied spec with generation and hash, the last
error, startup timings, settings pending a restart and ``last_active``. One
``asyncio.Condition`` guards it.

The status machine (Neon's, ``compute_tools/README.md``)::

    empty ──/configure──▶ configuration_pending ──▶ init ──▶ running ◀──┐
      │                                               │        │       │
      └──────────── spec at start ──────────────────▶─┘        ▼       │
                                                 configuration_pending │
                                                           │           │
                                                     configuration ────┘
    any live state ──/terminate, signal──▶ termination_pending_{fast,immediate} ──▶ terminated
    init ──error──▶ failed;  running, configuration ──postgres exits──▶ failed
    configuration ──apply fails (pending_error) or spec refused──▶ running

``failed`` is kept for what a restart alone can cure (postgres gone, the start failing).
An apply that fails on a healthy postgres (beyond Neon, which goes ``failed`` for good)
goes back to ``running`` on the last applied spec and records ``pending_error``; the
configurator retries the desired spec until it applies or a newer one replaces it. A
desired spec postgres itself refuses (``reject_desired``) is dropped: desired goes back
to the applied spec.

Rules: every mutation happens with the lock held (``async with state.lock():``) and
wakes every waiter; every wait is ``wait_for(predicate)``, which reads the predicate
under the lock *before* sleeping, so a notification sent before the wait cannot be
lost (the bug of Neon PR #9162 cannot be written with this API).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable

from compute_ctl.compute import spec as spec_mod

__all__ = [
    "TRANSITIONS",
    "ComputeState",
    "ComputeStatus",
    "IllegalTransition",
    "MigrationsProgress",
    "Timings",
]

logger = logging.getLogger(__name__)


class ComputeStatus(enum.StrEnum):
    """Neon's ``ComputeStatus``; the values are the JSON wire names and must never change."""

    EMPTY = "empty"
    CONFIGURATION_PENDING = "configuration_pending"
    INIT = "init"
    RUNNING = "running"
    CONFIGURATION = "configuration"
    FAILED = "failed"
    TERMINATION_PENDING_FAST = "termination_pending_fast"
    TERMINATION_PENDING_IMMEDIATE = "termination_pending_immediate"
    TERMINATED = "terminated"

    @property
    def kebab(self) -> str:
        """The form Neon uses in metric labels and error texts."""
        return self.value.replace("_", "-")

    @property
    def terminating(self) -> bool:
        return self in (
            ComputeStatus.TERMINATION_PENDING_FAST,
            ComputeStatus.TERMINATION_PENDING_IMMEDIATE,
            ComputeStatus.TERMINATED,
        )


S = ComputeStatus
_TERMINATE = frozenset({S.TERMINATION_PENDING_FAST, S.TERMINATION_PENDING_IMMEDIATE})

TRANSITIONS: dict[ComputeStatus, frozenset[ComputeStatus]] = {
    S.EMPTY: frozenset({S.CONFIGURATION_PENDING, S.INIT, S.FAILED}) | _TERMINATE,
    S.CONFIGURATION_PENDING: frozenset({S.INIT, S.CONFIGURATION, S.FAILED}) | _TERMINATE,
    S.INIT: frozenset({S.RUNNING, S.FAILED}) | _TERMINATE,
    S.RUNNING: frozenset({S.CONFIGURATION_PENDING, S.FAILED}) | _TERMINATE,
    S.CONFIGURATION: frozenset({S.RUNNING, S.FAILED, S.CONFIGURATION_PENDING}) | _TERMINATE,
    S.FAILED: frozenset({S.TERMINATED}) | _TERMINATE,
    S.TERMINATION_PENDING_FAST: frozenset({S.TERMINATED, S.TERMINATION_PENDING_IMMEDIATE}),
    S.TERMINATION_PENDING_IMMEDIATE: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}
"""Legal moves. Setting the current status again is always allowed and is a no-op."""


class IllegalTransition(RuntimeError):
    def __init__(self, old: ComputeStatus, new: ComputeStatus) -> None:
        super().__init__(f"illegal compute status transition: {old.value} -> {new.value}")
        self.old = old
        self.new = new


@dataclasses.dataclass(frozen=True)
class MigrationsProgress:
    """Beyond Neon: where the start-time migrations are (``/status`` field ``migrations``).

    ``state`` is ``running``, ``done`` or ``failed``; ``applied`` of ``latest`` migrations
    are in the cluster; ``failed_id`` names the migration that failed (retried at the
    next start)."""

    state: str
    applied: int | None = None
    latest: int | None = None
    failed_id: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Timings:
    """Startup timings under Neon's ``/metrics.json`` names (milliseconds unless named)."""

    wait_for_spec_ms: int = 0
    sync_sk_check_ms: int = 0
    sync_safekeepers_ms: int = 0
    pageserver_connect_micros: int = 0
    basebackup_ms: int = 0
    basebackup_bytes: int = 0
    start_postgres_ms: int = 0
    config_ms: int = 0
    total_startup_ms: int = 0
    load_ext_ms: int = 0
    num_ext_downloaded: int = 0
    largest_ext_size: int = 0
    total_ext_download_size: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class ComputeState:
    """The compute's state. Mutate only inside ``async with state.lock()``."""

    def __init__(self, *, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self._cond = asyncio.Condition()
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.status = ComputeStatus.EMPTY
        self.status_since = time.monotonic()  # when ``status`` last changed
        self.start_time: datetime.datetime = self._clock()
        self.error: str | None = None
        # Desired: what inputs asked for. Applied: what the configurator last reached.
        self.desired: spec_mod.ComputeSpec | None = None
        self.desired_generation = 0
        self.desired_hash = ""
        self.applied: spec_mod.ComputeSpec | None = None
        self.applied_generation = 0
        self.applied_hash = ""
        self.config: spec_mod.ComputeCtlConfig = spec_mod.ComputeCtlConfig()
        self.pending_restart: list[str] = []
        # Beyond Neon: the last failed attempt at the desired spec (retried meanwhile), and
        # the last desired spec that was dropped because postgres refused it.
        self.pending_error: str | None = None
        self.failed_generation = 0
        self.rejected_generation = 0
        self.rejection: str | None = None
        self.last_active: datetime.datetime | None = None
        self.timings = Timings()
        self.terminate_lsn: str | None = None
        # None until a Primary start with catalog updates runs them (never on reconfigure).
        self.migrations: MigrationsProgress | None = None
        self.transitions: list[tuple[ComputeStatus, ComputeStatus]] = []
        self.listeners: list[Callable[[ComputeStatus, ComputeStatus], None]] = []

    # --- locking and waiting -------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[ComputeState]:
        async with self._cond:
            yield self

    def _require_lock(self) -> None:
        if not self._cond.locked():
            raise RuntimeError("ComputeState mutated without holding its lock")

    async def wait_for(
        self,
        predicate: Callable[[ComputeState], bool],
        *,
        timeout: float | None = None,
    ) -> None:
        """Wait until ``predicate(state)`` holds. It is checked under the lock first."""
        async with self._cond:
            async with asyncio.timeout(timeout):
                await self._cond.wait_for(lambda: predicate(self))

    # --- mutations (lock held) -----------------------------------------------

    def set_status(self, new: ComputeStatus, *, error: str | None = None) -> None:
        self._require_lock()
        old = self.status
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(old, new)
        self.status = new
        self.status_since = time.monotonic()
        if error is not None:
            self.error = error
        elif new in (ComputeStatus.RUNNING, ComputeStatus.INIT):
            self.error = None
        self.transitions.append((old, new))
        logger.info("compute status: %s -> %s", old.value, new.value)
        for listener in self.listeners:
            listener(old, new)
        self._cond.notify_all()

    def set_desired(self, spec: spec_mod.ComputeSpec) -> int:
        """Record a new desired spec; returns its generation."""
        self._require_lock()
        self.desired = spec
        self.desired_generation += 1
        self.desired_hash = spec_mod.spec_hash(spec)
        self._cond.notify_all()
        return self.desired_generation

    def set_applied(self, spec: spec_mod.ComputeSpec, generation: int) -> None:
        self._require_lock()
        self.applied = spec
        self.applied_generation = generation
        self.applied_hash = spec_mod.spec_hash(spec)
        if generation >= self.failed_generation:
            self.pending_error = None
        self._cond.notify_all()

    def fail_attempt(self, generation: int, error: str) -> None:
        """An attempt at desired ``generation`` failed; it stays desired and is retried."""
        self._require_lock()
        self.failed_generation = generation
        self.pending_error = error
        self._cond.notify_all()

    def reject_desired(self, generation: int, error: str) -> None:
        """Desired ``generation`` cannot apply (postgres refuses it): drop it, so desired is
        the applied spec again and nothing is retried."""
        self._require_lock()
        self.rejected_generation = generation
        self.rejection = error
        if self.desired_generation == generation and self.applied is not None:
            self.desired = self.applied
            self.desired_hash = self.applied_hash
            self.applied_generation = generation
            self.pending_error = None
        self._cond.notify_all()

    def set_migrations(self, progress: MigrationsProgress) -> None:
        self._require_lock()
        self.migrations = progress
        self._cond.notify_all()

    def touch_active(self, when: datetime.datetime) -> None:
        """``last_active`` only moves forward."""
        self._require_lock()
        if self.last_active is None or when > self.last_active:
            self.last_active = when
            self._cond.notify_all()

    # --- reads ---------------------------------------------------------------

    def now(self) -> datetime.datetime:
        return self._clock()


def monotonic_ms(since: float) -> int:
    """Milliseconds elapsed since a ``time.monotonic()`` reading."""
    return int((time.monotonic() - since) * 1000)
