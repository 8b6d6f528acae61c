"""The activity monitor: when was this compute last used? (Neon's ``monitor.rs``.)

Owns ``ActivityMonitor``, one task per compute. It waits until the status is
``running`` (the catalog apply at start connects to every database, which is not user
activity), then polls every 500 ms on one connection of its own, as the superuser,
and records the newest activity in ``state.last_active``, which only moves forward and
is never set at start. The checks, in Neon's order; the first that fires wins:

1. with the ``activity_monitor_experimental`` feature: a change in the sums of
   ``active_time`` and ``sessions`` of ``pg_stat_database`` (user databases only);
2. a client backend that is not idle (idle in transaction counts) means *now*; otherwise
   the newest ``state_change`` among idle client backends;
3. a walsender other than the walproposer, 4. a running logical subscription worker,
   5. an autovacuum worker: *now*.

Its own backend and every session of the superuser are excluded, and all checks run as
one statement per poll, so polling never looks like activity and costs one round trip.
On an error it records downtime (``compute_pg_current_downtime_ms``,
``compute_pg_downtime_ms_total``) and reconnects; it stops on termination or failure.
It never changes anything but ``last_active`` and those metrics.

The node runs one per compute, next to the configurator (it waits for ``running`` on
its own and returns on termination)::

    ActivityMonitor(state=node.state, connstr=node.connstr(), metrics=node.metrics).run()
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import pgsession
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod

__all__ = ["CHECK_INTERVAL", "ActivityMonitor", "Observation"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
APPLICATION_NAME = "compute_ctl:activity_monitor"
_STOP = frozenset(
    {
        state_mod.ComputeStatus.TERMINATION_PENDING_FAST,
        state_mod.ComputeStatus.TERMINATION_PENDING_IMMEDIATE,
        state_mod.ComputeStatus.TERMINATED,
        state_mod.ComputeStatus.FAILED,
    }
)

# One round trip. "Others" are client backends that are neither us nor the superuser
# (compute_ctl, the operator, readiness probes all connect as the superuser).
_CHECK_SQL = """
WITH others AS (
    SELECT state, state_change FROM pg_catalog.pg_stat_activity
    WHERE backend_type OPERATOR(pg_catalog.=) 'client backend'
      AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND usename OPERATOR(pg_catalog.<>) current_user
)
SELECT
    (SELECT coalesce(sum(active_time), 0)::float8 FROM pg_catalog.pg_stat_database
      WHERE datname NOT IN ('postgres', 'template0', 'template1')),
    (SELECT coalesce(sum(sessions), 0)::int8 FROM pg_catalog.pg_stat_database
      WHERE datname NOT IN ('postgres', 'template0', 'template1')),
    (SELECT count(*) FROM others WHERE state IS NOT NULL AND state OPERATOR(pg_catalog.<>) 'idle'),
    (SELECT max(state_change) FROM others WHERE state OPERATOR(pg_catalog.=) 'idle'),
    (SELECT count(*) FROM pg_catalog.pg_stat_replication
      WHERE application_name OPERATOR(pg_catalog.<>) 'walproposer'),
    (SELECT count(*) FROM pg_catalog.pg_stat_subscription WHERE pid IS NOT NULL),
    (SELECT count(*) FROM pg_catalog.pg_stat_activity
      WHERE backend_type OPERATOR(pg_catalog.=) 'autovacuum worker')
"""


@dataclasses.dataclass(frozen=True)
class Observation:
    """One poll's reading of the activity views."""

    active_time: float
    sessions: int
    busy_backends: int
    idle_since: datetime.datetime | None
    walsenders: int
    subscriptions: int
    autovacuum_workers: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Observation:
        return cls(
            active_time=float(row[0]),
            sessions=int(row[1]),
            busy_backends=int(row[2]),
            idle_since=row[3],
            walsenders=int(row[4]),
            subscriptions=int(row[5]),
            autovacuum_workers=int(row[6]),
        )


class ActivityMonitor:
    """Polls postgres and moves ``state.last_active`` forward. Run it with ``run()``."""

    def __init__(
        self,
        *,
        state: state_mod.ComputeState,
        connstr: str,
        metrics: metrics_mod.Metrics | None = None,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.interval = interval
        self._clock = clock or state.now
        self._connstr = connstr
        self._last_active: datetime.datetime | None = None
        self._active_time: float | None = None
        self._sessions: int | None = None
        self._last_up = time.monotonic()
        self._last_checked = self._last_up
        self.checks = 0
        """Successful polls so far (for tests and logs)."""

    # --- the loop ------------------------------------------------------------

    async def run(self) -> None:
        """Wait for ``running``, then poll until the compute terminates or fails."""
        await self.state.wait_for(
            lambda s: s.status == state_mod.ComputeStatus.RUNNING or s.status in _STOP
        )
        if self._stopping():
            return
        logger.info("activity monitor started (every %.0f ms)", self.interval * 1000)
        self._last_up = self._last_checked = time.monotonic()
        conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        try:
            while not self._stopping():
                try:
                    if conn is None or conn.closed:
                        conn = await pgsession.open_session(
                            self._connstr, application_name=APPLICATION_NAME, timeout=5
                        )
                    seen = await self._check(conn)
                except (psycopg.Error, OSError, TimeoutError) as e:
                    if self._stopping():
                        break
                    self._report_down()
                    logger.info("activity monitor: postgres check failed, reconnecting: %s", e)
                    if conn is not None:
                        await conn.close()
                    conn = None
                else:
                    self.checks += 1
                    self._report_up()
                    if seen is not None:
                        async with self.state.lock():
                            self.state.touch_active(seen)
                self._last_checked = time.monotonic()
                await self._pause()
        finally:
            if conn is not None:
                await conn.close()
            logger.info("activity monitor stopped (compute is %s)", self.state.status.value)

    def _stopping(self) -> bool:
        return self.state.status in _STOP

    async def _pause(self) -> None:
        """Sleep one interval, but wake at once when the compute starts terminating."""
        with contextlib.suppress(TimeoutError):
            await self.state.wait_for(lambda s: s.status in _STOP, timeout=self.interval)

    # --- one poll ------------------------------------------------------------

    async def _check(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]]
    ) -> datetime.datetime | None:
        cursor = await conn.execute(_CHECK_SQL)
        row = await cursor.fetchone()
        if row is None:
            raise psycopg.DataError("activity query returned no row")
        return self.evaluate(Observation.from_row(row))

    def evaluate(self, seen: Observation) -> datetime.datetime | None:
        """Apply Neon's checks to one observation; the activity time found, if any."""
        now = self._clock()
        if self._experimental():
            changed = (self._active_time is not None and seen.active_time != self._active_time) or (
                self._sessions is not None and seen.sessions != self._sessions
            )
            self._active_time, self._sessions = seen.active_time, seen.sessions
            if changed:
                return self._moved(now)
        if seen.busy_backends > 0:
            return self._moved(now)
        if seen.idle_since is not None and (
            self._last_active is None or seen.idle_since > self._last_active
        ):
            return self._moved(seen.idle_since)
        if seen.walsenders > 0 or seen.subscriptions > 0 or seen.autovacuum_workers > 0:
            return self._moved(now)
        return None

    def _moved(self, when: datetime.datetime) -> datetime.datetime:
        if self._last_active is None or when > self._last_active:
            self._last_active = when
        return when

    def _experimental(self) -> bool:
        desired = self.state.desired
        return desired is not None and (
            spec_mod.ComputeFeature.ACTIVITY_MONITOR_EXPERIMENTAL in desired.features
        )

    # --- downtime ------------------------------------------------------------

    def _report_down(self) -> None:
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.report_down(
                current_ms=(now - self._last_up) * 1000,
                increment_ms=(now - self._last_checked) * 1000,
            )

    def _report_up(self) -> None:
        self._last_up = time.monotonic()
        if self.metrics is not None:
            self.metrics.report_up()
