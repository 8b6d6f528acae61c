"""The time source of the vm-monitor's decisions: sampling ticks, staleness, rate limits.

Production uses the event loop's monotonic clock. Tests pass their own ``Clock`` so that
"five samples, then one second of silence" takes no wall time and cannot flake. Only
the decision logic reads this clock; network timeouts (setup, I/O) stay on real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (the origin is arbitrary)."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (at once if it already is)."""


class MonotonicClock:
    """``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
