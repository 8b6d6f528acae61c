"""The scaling decisions of one agent connection (upstream's ``Runner``).

One loop handles, strictly one at a time and in arrival order: agent messages, fresh
cgroup figures and the kill signal of a newer connection.

- ``DownscaleRequest`` (target memory M): usable = M - 100 MiB. With a cgroup: figures
  older than 5 s are an error (-> ``InternalError``); one sample or none -> deny; deny if
  floor(0.85 * usable) < average anonymous memory + 100 MiB. Otherwise resize the LFC,
  lower the threshold, approve; ``Status`` says what was done, in upstream's words.
- ``UpscaleNotification`` (granted G): resize the LFC for G - 100 MiB, threshold
  floor(0.85 * (G - 100 MiB)), then ``UpscaleConfirmation``.
- Fresh figures: average anonymous memory >= threshold -> ``UpscaleRequest`` (our odd id),
  at most one per second; suppressed ones are dropped silently (neon #5865).
- ``HealthCheck`` is echoed; the agent's ``InvalidMessage``/``InternalError`` are logged.
- Beyond upstream: an unparseable frame gets ``InvalidMessage`` (same id when it had one)
  and the connection stays up.

Everything here is per connection; the owner (``server``) builds a new Runner for each.

Backpressure (beyond upstream): at most ``INBOUND_BACKLOG`` agent messages wait here. An
agent that sends faster than we answer, or never reads our answers (so our sends block),
stops being read: the kernel's buffers fill and its own sends block, instead of our memory
growing with every frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import struct
from decimal import Decimal
from pathlib import Path

from compute_ctl.compute import loghygiene
from compute_ctl.compute.vm_monitor import cgroup as cgroup_mod
from compute_ctl.compute.vm_monitor import clock as clock_mod
from compute_ctl.compute.vm_monitor import dispatcher as dispatcher_mod
from compute_ctl.compute.vm_monitor import errors, filecache, metrics, protocol

__all__ = ["Config", "Env", "Runner", "mib"]

logger = logging.getLogger(__name__)

MiB = 1 << 20
# Agent messages read but not yet handled; the reader waits for room beyond that.
INBOUND_BACKLOG = 16
NOT_MANAGING = "monitor is not managing cgroup or file cache"
NOT_ENOUGH_SAMPLES = "haven't received enough cgroup memory stats yet"


@dataclasses.dataclass(frozen=True)
class Config:
    """Upstream's ``runner::Config::default`` plus the timings it hard-codes."""

    sys_buffer_bytes: int = 100 * MiB
    cgroup_min_overhead_fraction: float = 0.15
    cgroup_downscale_threshold_buffer_bytes: int = 100 * MiB
    stale_after: float = 5.0
    upscale_request_every: float = 1.0
    sample_interval: float = 0.1
    sample_window: int = 5

    def threshold(self, total: int) -> int:
        """The anonymous memory at which we ask for more: floor(0.85 * total)."""
        return int(total * (1.0 - self.cgroup_min_overhead_fraction))


@dataclasses.dataclass(frozen=True)
class Env:
    """What every connection shares: decision numbers, time, counters."""

    config: Config
    clock: clock_mod.Clock
    metrics: metrics.Metrics


def mib(num_bytes: int) -> str:
    """Bytes as MiB, printed as upstream prints its f32 (``785.4``, ``607``)."""
    value = _f32(_f32(num_bytes) / MiB)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _f32(float(text)) == value:
            break
    return f"{Decimal(text):f}"


def _f32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


class _Signal(enum.Enum):
    SAMPLE = "sample"
    CLOSED = "closed"
    STOP = "stop"


_Event = protocol.Inbound | protocol.InvalidFrame | _Signal


class Runner:
    def __init__(
        self,
        dispatcher: dispatcher_mod.Dispatcher,
        *,
        env: Env,
        filecache: filecache.FileCache | None,
        cgroup_path: Path | None,
        mem_total: int,
    ) -> None:
        self._dispatcher = dispatcher
        self._env = env
        self._config = env.config
        self._clock = env.clock
        self._filecache = filecache
        # Signals are few (coalesced samples, one stop, one close); messages are bounded
        # by ``_room``, taken by the reader and given back once a message is handled.
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._room = asyncio.Semaphore(INBOUND_BACKLOG)
        self._sample_queued = False
        self._stopping = ""
        self._last_upscale_request: float | None = None
        self._watcher: cgroup_mod.CgroupWatcher | None = None
        self.threshold = 0
        if cgroup_path is not None:
            self._watcher = cgroup_mod.CgroupWatcher(
                cgroup_path,
                clock=env.clock,
                on_update=self._on_sample,
                interval=self._config.sample_interval,
                window=self._config.sample_window,
            )
            self._watcher.check()
            self.threshold = self._config.threshold(mem_total)
            logger.info("set initial cgroup threshold to %s MiB", mib(self.threshold))

    def stop(self, reason: str) -> None:
        """Ask the loop to exit before its next event (a newer connection, or shutdown)."""
        self._stopping = reason
        self._events.put_nowait(_Signal.STOP)

    def _on_sample(self) -> None:
        # Coalesced like a watch channel: one pending wake-up, however many samples.
        if not self._sample_queued:
            self._sample_queued = True
            self._events.put_nowait(_Signal.SAMPLE)

    async def run(self) -> str:
        """Serve until killed or disconnected; return why it ended."""
        tasks = [asyncio.create_task(self._read(), name="vm-monitor-reader")]
        if self._watcher is not None:
            tasks.append(asyncio.create_task(self._watch(), name="vm-monitor-cgroup"))
        try:
            while True:
                if self._stopping:
                    return self._stopping
                event = await self._events.get()
                if event is _Signal.STOP:
                    continue
                if event is _Signal.CLOSED:
                    return "dispatcher connection closed"
                try:
                    await self._handle(event)
                except errors.ConnectionClosed as e:
                    return str(e)
                finally:
                    if not isinstance(event, _Signal):
                        self._room.release()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._filecache is not None:
                await self._filecache.close()

    async def _read(self) -> None:
        try:
            while True:
                await self._room.acquire()
                item = await self._dispatcher.receive()
                if item is None:
                    break
                self._events.put_nowait(item)
        finally:
            self._events.put_nowait(_Signal.CLOSED)

    async def _watch(self) -> None:
        assert self._watcher is not None
        try:
            await self._watcher.run()
        except Exception:
            # Figures now go stale: downscaling fails loudly rather than guessing.
            logger.exception("cgroup watcher terminated")

    async def _handle(self, event: _Event) -> None:
        if event is _Signal.SAMPLE:
            self._sample_queued = False
            await self._maybe_request_upscale()
        elif isinstance(event, protocol.InvalidFrame):
            self._env.metrics.requests.labels(type="invalid").inc()
            logger.warning(
                "invalid message from agent (id %d): %s", event.id, loghygiene.clip(event.error)
            )
            await self._dispatcher.send(protocol.InvalidMessage(error=event.error, id=event.id))
        elif not isinstance(event, _Signal):
            self._env.metrics.requests.labels(type=event.type).inc()
            reply = await self._process(event)
            if reply is not None:
                await self._dispatcher.send(reply)

    async def _process(self, message: protocol.Inbound) -> protocol.Outbound | None:
        id = message.id
        match message:
            case protocol.HealthCheck():
                return protocol.HealthCheckEcho(id=id)
            case protocol.UpscaleNotification():
                try:
                    await self._handle_upscale(message.content.granted.mem)
                except errors.MonitorError as e:
                    return self._internal_error("failed to handle upscale", e, id=id)
                return protocol.UpscaleConfirmation(id=id)
            case protocol.DownscaleRequest():
                try:
                    ok, status = await self._try_downscale(message.content.target.mem)
                except errors.MonitorError as e:
                    self._env.metrics.decisions.labels(decision=metrics.Decision.ERROR).inc()
                    return self._internal_error("failed to downscale", e, id=id)
                decision = metrics.Decision.APPROVED if ok else metrics.Decision.DENIED
                self._env.metrics.decisions.labels(decision=decision).inc()
                return protocol.DownscaleResult(Ok=ok, Status=status, id=id)
            case protocol.InvalidMessageReport():
                logger.warning(
                    "received notification of an invalid message we sent (id %d): %s",
                    id,
                    loghygiene.clip(message.content.error),
                )
            case protocol.InternalErrorReport():
                logger.warning(
                    "agent experienced an internal error (id %d): %s",
                    id,
                    loghygiene.clip(message.content.error),
                )
        return None

    @staticmethod
    def _internal_error(outer: str, cause: Exception, *, id: int) -> protocol.InternalError:
        # The agent gets the outermost message only, as upstream; the log gets the chain.
        logger.warning("error handling message: %s: %s", outer, cause)
        return protocol.InternalError(error=outer, id=id)

    async def _try_downscale(self, target: int) -> tuple[bool, str]:
        if self._watcher is None and self._filecache is None:
            logger.info("no action needed for downscale (no cgroup or file cache enabled)")
            return True, NOT_MANAGING
        usable = max(0, target - self._config.sys_buffer_bytes)
        new_threshold = self._config.threshold(usable)
        if self._watcher is not None:
            figures = self._watcher.latest
            # Order matters (upstream): no news for 5 s is an error even at startup; a
            # fresh connection with too few samples is a denial, not an error.
            if self._clock.now() - figures.at > self._config.stale_after:
                raise errors.StaleFigures(
                    "haven't gotten cgroup memory stats recently enough to determine "
                    "downscaling information"
                )
            if figures.history.samples_count <= 1:
                logger.info("discontinuing downscale: %s", NOT_ENOUGH_SAMPLES)
                return False, NOT_ENOUGH_SAMPLES
            current = figures.history.avg_non_reclaimable
            buffer = self._config.cgroup_downscale_threshold_buffer_bytes
            if new_threshold < current + buffer:
                status = (
                    f"calculated memory threshold too low: {mib(new_threshold)} MiB "
                    f"(new threshold) < {mib(current)} (current usage) + {mib(buffer)} "
                    "(downscale buffer)"
                )
                logger.info("discontinuing downscale: %s", status)
                return False, status
        steps: list[str] = []
        if self._filecache is not None:
            expected = self._filecache.config.calculate_cache_size(usable)
            actual = await self._filecache.set_size(expected)
            steps.append(f"set file cache size to {mib(actual)} MiB")
        if self._watcher is not None:
            steps.append(
                f"set cgroup memory threshold from {mib(self.threshold)} MiB to "
                f"{mib(new_threshold)} MiB, of new total {mib(usable)} MiB"
            )
            self.threshold = new_threshold
        status = "; ".join(steps)
        logger.info("downscale: %s", status)
        return True, status

    async def _handle_upscale(self, granted: int) -> None:
        if self._watcher is None and self._filecache is None:
            logger.info("no action needed for upscale (no cgroup or file cache enabled)")
            return
        usable = max(0, granted - self._config.sys_buffer_bytes)
        if self._filecache is not None:
            expected = self._filecache.config.calculate_cache_size(usable)
            actual = await self._filecache.set_size(expected)
            if actual != expected:
                logger.warning(
                    "file cache was set to a different size than we wanted: "
                    "target = %s MiB, actual = %s MiB",
                    mib(expected),
                    mib(actual),
                )
        if self._watcher is not None:
            new_threshold = self._config.threshold(usable)
            logger.info(
                "set cgroup memory threshold from %s MiB to %s MiB of new total %s MiB",
                mib(self.threshold),
                mib(new_threshold),
                mib(usable),
            )
            self.threshold = new_threshold

    async def _maybe_request_upscale(self) -> None:
        if self._watcher is None:
            return
        average = self._watcher.latest.history.avg_non_reclaimable
        if average < self.threshold:
            return
        now = self._clock.now()
        last = self._last_upscale_request
        if last is not None and now - last < self._config.upscale_request_every:
            return  # silently: logging here spammed every 100 ms upstream (neon #5865)
        self._last_upscale_request = now
        logger.info(
            "cgroup memory stats are high enough to upscale, requesting upscale: "
            "avg_non_reclaimable %s MiB >= threshold %s MiB",
            mib(average),
            mib(self.threshold),
        )
        await self._dispatcher.send(protocol.UpscaleRequest(id=self._dispatcher.next_id()))
        self._env.metrics.upscale_requests.inc()
