"""``VmMonitor``: the websocket server the autoscaler-agent dials (``GET /monitor``).

compute_ctl's node starts it after postgres is ready when ``AUTOSCALING`` is set and stops
it when postgres exits. Each upgrade to a websocket becomes one session: it takes the
``Switchboard`` seat (killing any older connection), then sets up within 4 s, as upstream:
handshake, LFC connection and initial sizing from ``MemTotal``, cgroup check. Then a
``runner.Runner`` serves until the agent leaves or a newer connection arrives.

``--vm-monitor-addr`` takes any ``host:port``: Neon's default is ``0.0.0.0:10301``, and
``127.0.0.1:10301`` serves only an agent on the same host (tests bind there). The log
lines an agent can repeat are throttled (``loghygiene``).

LFC sizing is skipped entirely when the spec says ``disable_lfc_resizing`` or no connection
string is given, and, after one log line, when this PostgreSQL has no such setting.

This module owns the HTTP side and the session lifecycle; decisions live in ``runner``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import prometheus_client
from aiohttp import web

from compute_ctl.compute import errors as compute_errors
from compute_ctl.compute import loghygiene
from compute_ctl.compute.vm_monitor import cgroup as cgroup_mod
from compute_ctl.compute.vm_monitor import clock as clock_mod
from compute_ctl.compute.vm_monitor import dispatcher as dispatcher_mod
from compute_ctl.compute.vm_monitor import errors, filecache, metrics, runner

__all__ = ["Options", "VmMonitor", "parse_addr"]

logger = logging.getLogger(__name__)

_CLOSE_NORMAL = 1000
_CLOSE_GOING_AWAY = 1001
_CLOSE_PROTOCOL_ERROR = 1002
_CLOSE_INTERNAL_ERROR = 1011
_CLOSE_TIMEOUT = 2.0  # how long a close waits for the agent's close frame


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs beyond the contract's four; the defaults are upstream's."""

    clock: clock_mod.Clock = dataclasses.field(default_factory=clock_mod.MonotonicClock)
    # None: read MemTotal from /proc/meminfo at each connection (it changes on hotplug).
    mem_total: int | None = None
    decisions: runner.Config = dataclasses.field(default_factory=runner.Config)
    lfc_settings: filecache.Settings = dataclasses.field(default_factory=filecache.Settings)
    lfc_config: filecache.FileCacheConfig = dataclasses.field(
        default_factory=filecache.FileCacheConfig
    )
    setup_timeout: float = 4.0
    # How long a replaced connection may take to finish its current message.
    replace_grace: float = 2.0


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as for ``--vm-monitor-addr``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise compute_errors.ConfigError(f"invalid vm-monitor address {addr!r}: want host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


class VmMonitor:
    def __init__(
        self,
        *,
        addr: str,
        cgroup_path: Path | None,
        filecache_connstr: str | None,
        disable_lfc_resizing: bool,
        registry: prometheus_client.CollectorRegistry | None = None,
        options: Options | None = None,
    ) -> None:
        self._host, self._port = parse_addr(addr)
        self._cgroup_path = cgroup_path
        # As compute_ctl: with disable_lfc_resizing the monitor never gets a connection string.
        self._connstr = None if disable_lfc_resizing else filecache_connstr
        self._lfc_missing = False
        self._options = options or Options()
        self._metrics = metrics.Metrics(registry or prometheus_client.CollectorRegistry())
        self._env = runner.Env(
            config=self._options.decisions, clock=self._options.clock, metrics=self._metrics
        )
        self._switchboard = dispatcher_mod.Switchboard(grace=self._options.replace_grace)
        self._runner: web.AppRunner | None = None
        if disable_lfc_resizing:
            logger.info("local file cache resizing disabled by the spec (disable_lfc_resizing)")

    @property
    def port(self) -> int:
        """The bound port (useful when ``addr`` asked for port 0)."""
        if self._runner is None:
            raise RuntimeError("vm-monitor is not started")
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("vm-monitor has no listening socket")

    async def start(self) -> None:
        loghygiene.throttle()
        app = web.Application()
        app.router.add_get("/monitor", self._monitor)
        runner_ = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner_.setup()
        try:
            await web.TCPSite(runner_, self._host, self._port).start()
        except OSError as e:
            await runner_.cleanup()
            raise compute_errors.ConfigError(
                f"vm-monitor cannot listen on {self._host}:{self._port}: {e.strerror or e}"
            ) from e
        self._runner = runner_
        logger.info(
            "vm-monitor listening on %s:%d (cgroup %s, file cache %s)",
            self._host,
            self.port,
            self._cgroup_path or "not managed",
            "managed" if self._connstr else "not managed",
        )

    async def stop(self) -> None:
        """Close the live connection (if any) and the listener. Idempotent."""
        await self._switchboard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._metrics.close()
        logger.info("vm-monitor stopped")

    async def _monitor(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            timeout=_CLOSE_TIMEOUT, max_msg_size=dispatcher_mod.MAX_FRAME_BYTES
        )
        await ws.prepare(request)
        logger.info("agent connected from %s", request.remote)
        dispatcher = dispatcher_mod.Dispatcher(ws)
        # Unless the session says otherwise, it was killed (by a newer connection or stop).
        code, reason = _CLOSE_GOING_AWAY, ""
        async with self._switchboard.seat() as seat:
            # Killed already if a newer connection came while we waited for our turn.
            if not seat.killed.is_set():
                task = asyncio.create_task(self._session(dispatcher, seat))
                seat.task = task
                await asyncio.wait([task])
                if not task.cancelled() and (exc := task.exception()) is not None:
                    logger.error("vm-monitor connection failed", exc_info=exc)
                    code, reason = _CLOSE_INTERNAL_ERROR, "internal error"
                elif not task.cancelled():
                    code, reason = task.result()
            if not reason:
                reason = seat.reason
                logger.info("vm-monitor connection ended: %s", reason)
        # Outside the seat: the close handshake waits for the agent, the next one must not.
        await dispatcher.close(code=code, message=reason)
        return ws

    async def _session(
        self, dispatcher: dispatcher_mod.Dispatcher, seat: dispatcher_mod.Seat
    ) -> tuple[int, str]:
        """Set up, then serve; return the websocket close code and reason."""
        count = self._metrics.connections
        try:
            async with asyncio.timeout(self._options.setup_timeout):
                session = await self._setup(dispatcher)
        except TimeoutError:
            logger.warning("creating monitor timed out")
            count.labels(outcome="timeout").inc()
            return _CLOSE_INTERNAL_ERROR, "creating monitor timed out"
        except errors.HandshakeError as e:
            logger.warning("failed to create monitor: handshake: %s", e)
            count.labels(outcome="handshake_failed").inc()
            return _CLOSE_PROTOCOL_ERROR, "protocol handshake failed"
        except errors.MonitorError as e:
            logger.warning("failed to create monitor: %s", e)
            count.labels(outcome="setup_failed").inc()
            return _CLOSE_INTERNAL_ERROR, "failed to create monitor"
        count.labels(outcome="established").inc()
        # From here a kill asks the runner to stop between messages (no more cancelling).
        seat.on_kill(session.stop)
        reason = await session.run()
        logger.info("vm-monitor connection ended: %s", reason)
        return (_CLOSE_GOING_AWAY if seat.killed.is_set() else _CLOSE_NORMAL), reason

    async def _setup(self, dispatcher: dispatcher_mod.Dispatcher) -> runner.Runner:
        await dispatcher.handshake()
        mem_total = self._options.mem_total
        if mem_total is None:
            mem_total = await asyncio.to_thread(cgroup_mod.read_mem_total)
        lfc = await self._open_filecache(mem_total)
        try:
            return runner.Runner(
                dispatcher,
                env=self._env,
                filecache=lfc,
                cgroup_path=self._cgroup_path,
                mem_total=mem_total,
            )
        except BaseException:
            if lfc is not None:
                await lfc.close()
            raise

    async def _open_filecache(self, mem_total: int) -> filecache.FileCache | None:
        if self._connstr is None or self._lfc_missing:
            return None
        lfc = await filecache.FileCache.connect(
            self._connstr, settings=self._options.lfc_settings, config=self._options.lfc_config
        )
        try:
            try:
                await lfc.probe()
            except errors.SettingMissing as e:
                # Once per monitor: the setting cannot appear without a postgres restart,
                # and a restart brings a new monitor.
                self._lfc_missing = True
                logger.warning("%s: local file cache sizing skipped (no neon extension?)", e)
                await lfc.close()
                return None
            current = await lfc.get_size()
            wanted = lfc.config.calculate_cache_size(mem_total)
            logger.info(
                "setting initial file cache size: %s MiB -> %s MiB",
                runner.mib(current),
                runner.mib(wanted),
            )
            # Set even when unchanged: it proves we may (upstream does the same).
            try:
                actual = await lfc.set_size(wanted)
            except errors.FileCacheError as e:
                raise errors.FileCacheError(
                    f"failed to set file cache size, possibly due to inadequate permissions: {e}"
                ) from e
            if actual != wanted:
                logger.info("file cache size actually got set to %s MiB", runner.mib(actual))
        except BaseException:
            await lfc.close()
            raise
        return lfc
