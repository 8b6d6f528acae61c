"""Memory figures from the kernel: a cgroup's anonymous memory, sampled, and ``MemTotal``.

Like Neon's vm-monitor since it stopped using ``memory.high`` events (neon PR #5524), we
only *read*: every 100 ms ``memory.stat``'s ``active_anon + inactive_anon`` (the memory
the kernel cannot reclaim without swapping), averaged over the last 5 samples and
published with the time of the last good sample. No cgroup file is ever written.

The cgroup is a plain directory path (``<cgroup_root>/<cgroup>``), so tests point it at a
directory they control. A failed read is logged once per streak and skipped: the figures
then go stale, and the runner refuses to decide on stale figures.

This module owns reading and averaging; decisions belong to ``runner``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from compute_ctl.compute.vm_monitor import clock as clock_mod
from compute_ctl.compute.vm_monitor import errors

__all__ = [
    "CgroupWatcher",
    "Figures",
    "MemoryHistory",
    "MiB",
    "read_mem_total",
    "read_non_reclaimable",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20
_GiB = float(1 << 30)
_ANON_KEYS = ("active_anon", "inactive_anon")
_LOG_EVERY_SAMPLES = 20
_LOG_AT_LEAST_EVERY = 15.0


def read_non_reclaimable(path: Path) -> int:
    """``active_anon + inactive_anon`` of the cgroup at ``path``, in bytes."""
    stat = path / "memory.stat"
    try:
        text = stat.read_text()
    except OSError as e:
        raise errors.CgroupError(f"cannot read {stat}: {e.strerror or e}") from e
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in _ANON_KEYS:
            try:
                found[key] = int(value)
            except ValueError as e:
                raise errors.CgroupError(f"{stat}: {key} is not an integer: {value!r}") from e
    missing = [k for k in _ANON_KEYS if k not in found]
    if missing:
        raise errors.CgroupError(f"{stat} has no {' or '.join(missing)}")
    return sum(found.values())


def read_mem_total(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The kernel's ``MemTotal`` in bytes (what upstream's sysinfo reports)."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise errors.CgroupError(f"{meminfo} has no MemTotal")


@dataclasses.dataclass(frozen=True)
class MemoryHistory:
    """The rolling window: average anonymous memory, how many samples, the time they span."""

    avg_non_reclaimable: int
    samples_count: int
    samples_span: float


@dataclasses.dataclass(frozen=True)
class Figures:
    """The latest history and when it was last refreshed (setup time before any sample)."""

    at: float
    history: MemoryHistory


class CgroupWatcher:
    """Samples one cgroup on a clock and keeps ``latest`` up to date.

    ``on_update`` is called (synchronously, in the loop) after each good sample, so the
    runner can react without polling.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: clock_mod.Clock,
        on_update: Callable[[], None],
        interval: float = 0.1,
        window: int = 5,
    ) -> None:
        self.path = path
        self._clock = clock
        self._on_update = on_update
        self._interval = interval
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=window)
        self.latest = Figures(at=clock.now(), history=MemoryHistory(0, 0, 0.0))
        self._failing = False
        self._count = 0
        self._logged: tuple[float, int] | None = None

    def check(self) -> None:
        """Fail setup early when the cgroup cannot be read at all."""
        read_non_reclaimable(self.path)

    async def run(self) -> None:
        """Sample now, then every ``interval``; a late tick is skipped, not made up."""
        deadline = self._clock.now()
        while True:
            self.sample()
            deadline += self._interval
            now = self._clock.now()
            if deadline < now:
                deadline = now + self._interval
            await self._clock.sleep_until(deadline)

    def sample(self) -> None:
        # A synchronous read on purpose: memory.stat is a few hundred bytes from the
        # kernel; a thread hop ten times a second would cost more than the read.
        try:
            value = read_non_reclaimable(self.path)
        except errors.CgroupError as e:
            if not self._failing:
                logger.warning("cgroup memory stats unavailable, figures will go stale: %s", e)
                self._failing = True
            return
        if self._failing:
            logger.info("cgroup memory stats readable again at %s", self.path)
            self._failing = False
        now = self._clock.now()
        self._samples.append((now, value))
        total = sum(v for _, v in self._samples)
        history = MemoryHistory(
            avg_non_reclaimable=total // len(self._samples),
            samples_count=len(self._samples),
            samples_span=now - self._samples[0][0],
        )
        self.latest = Figures(at=now, history=history)
        self._count += 1
        if self._count % _LOG_EVERY_SAMPLES == 0:
            self._log_history(now, history)
        self._on_update()

    def _log_history(self, now: float, history: MemoryHistory) -> None:
        """Every ~2 s, unless the figure barely moved (and it has been logged within 15 s)."""
        value = history.avg_non_reclaimable
        if self._logged is not None:
            at, last = self._logged
            diff = abs(value - last)
            similar = diff <= last / 8 and diff <= 128 * MiB
            if similar and now - at < _LOG_AT_LEAST_EVERY:
                return
        self._logged = (now, value)
        logger.info(
            "Recent cgroup memory statistics history: avg_non_reclaimable=%.3f GiB "
            "over %d samples (%.1f s): %s",
            value / _GiB,
            history.samples_count,
            history.samples_span,
            ", ".join(f"{v / _GiB:.3f}" for _, v in self._samples),
        )
