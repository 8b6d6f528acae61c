"""The postmaster as a child process: spawn, wait until ready, reload, stop, reap.

postgres runs directly as compute_ctl's child (Neon's ``postgres -D pgdata``), as the OS
user, with a parent-death signal (``pgtools``), so it cannot outlive compute_ctl. With
``AUTOSCALING`` it joins ``<cgroup_root>/<cgroup>`` from its preexec hook (Neon uses
``cgexec``). Its stdout and stderr are re-logged line by line with a ``PG:`` prefix.

Ready means the last line of ``postmaster.pid`` says ``ready`` (``standby`` for a hot
standby), polled every 20 ms; a child that exits first fails the start at once.

The postmaster's exit is read from its own process (a pidfd, ``_exit_status``), never
from ``asyncio``'s ``Process.wait()``: on Python 3.11 that returns only once the stdout
pipe closes, and every backend inherits the pipe, so a SIGKILLed postmaster under a
long query would look alive for as long as the query runs.

Stop modes follow Patroni's table: smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT.
This module knows nothing of specs or state; ``node`` decides when to call it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import enum
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from compute_ctl.compute import errors, pgtools

__all__ = ["STOP_SIGNALS", "Postmaster", "StopMode", "cgroup_preexec", "exit_code"]

logger = logging.getLogger(__name__)

_READY_POLL_S = 0.02
_RELOAD_POLL_S = 0.01
# A poll on an open session is one round trip, not a new backend: poll it more often.
_SHARED_POLL_S = 0.002


class StopMode(enum.StrEnum):
    SMART = "smart"
    FAST = "fast"
    IMMEDIATE = "immediate"


STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    StopMode.SMART: signal.SIGTERM,
    StopMode.FAST: signal.SIGINT,
    StopMode.IMMEDIATE: signal.SIGQUIT,
}


def exit_code(returncode: int) -> int:
    """compute_ctl's exit code for a postmaster return code (Neon: 1 when killed by a signal)."""
    return returncode if returncode >= 0 else 1


def cgroup_preexec(cgroup_dir: Path) -> Callable[[], None]:
    """A preexec hook that moves the child into ``cgroup_dir`` (cgroup v2 ``cgroup.procs``)."""
    procs = cgroup_dir / "cgroup.procs"
    if not procs.is_file():
        raise errors.ConfigError(f"cgroup {cgroup_dir} does not exist (no {procs.name})")

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return join


def _pm_status(pidfile: Path) -> str | None:
    """The postmaster status line (line 8) of ``postmaster.pid``, once it is written."""
    try:
        lines = pidfile.read_text().rstrip("\n").split("\n")
    except FileNotFoundError:
        return None
    return lines[7].strip() if len(lines) >= 8 else None


def _decode_waitid(result: os.waitid_result) -> int:
    """A ``Popen.returncode`` from a ``waitid`` result (negative: killed by that signal)."""
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status


async def _exit_status(proc: asyncio.subprocess.Process) -> int:
    """The child's return code, as soon as the child itself has exited.

    A pidfd becomes readable when the process exits, whatever its children (which hold
    the stdout pipe) do. The status is read with ``WNOWAIT``, leaving the zombie to
    asyncio's child watcher, which reaps it; if the watcher was first, its return code
    is already (or about to be) on ``proc``.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped (or no pidfd support): asyncio has the status
        return await proc.wait()
    loop = asyncio.get_running_loop()
    try:
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
        while proc.returncode is None:
            try:
                # WNOHANG: never blocks.
                result = os.waitid(  # noqa: ASYNC222
                    os.P_PIDFD, fd, os.WEXITED | os.WNOWAIT | os.WNOHANG
                )
            except ChildProcessError:  # reaped meanwhile: the watcher's callback is queued
                result = None
            if result is not None:
                return _decode_waitid(result)
            await asyncio.sleep(0.001)
        return proc.returncode
    finally:
        os.close(fd)


class Postmaster:
    """One spawned postmaster. Create with ``spawn``; then ``wait_ready``."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        *,
        pgdata: Path,
        connstr: str,
    ) -> None:
        self._proc = proc
        self.pgdata = pgdata
        self.connstr = connstr
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._exited = asyncio.get_running_loop().create_task(_exit_status(proc))
        self._relog: asyncio.Task[None] | None = None
        if proc.stdout is not None:
            self._relog = asyncio.get_running_loop().create_task(self._relog_lines(proc.stdout))

    @classmethod
    async def spawn(
        cls,
        *,
        tools: pgtools.PgTools,
        pgdata: Path,
        connstr: str,
        env: Mapping[str, str] | None = None,
        cgroup_dir: Path | None = None,
    ) -> Postmaster:
        preexec = cgroup_preexec(cgroup_dir) if cgroup_dir is not None else None
        proc = await tools.spawn(
            [tools.postgres, "-D", pgdata],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec=preexec,
            death_signal=pgtools.POSTMASTER_DEATH_SIGNAL,
        )
        logger.info("postgres spawned, pid %d", proc.pid)
        return cls(proc, pgdata=pgdata, connstr=connstr)

    # --- observation -----------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    async def _relog_lines(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream limit: take a chunk
                line = await stream.read(65536)
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            self._tail.append(text)
            logger.info("PG: %s", text)

    async def wait(self) -> int:
        """Wait for the postmaster to exit; its return code (negative: killed by a signal)."""
        return await asyncio.shield(self._exited)

    async def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Return once postgres accepts connections; raise if it exits or times out."""
        pidfile = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while True:
            if _pm_status(pidfile) in ("ready", "standby"):
                return
            if self._exited.done():
                # Let the re-logger drain what postgres said before it died.
                if self._relog is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await asyncio.shield(self._relog)
                raise errors.PostgresError(
                    f"postgres exited with code {self._exited.result()} during start: "
                    f"{self.log_tail()[-1500:]}"
                )
            if time.monotonic() > deadline:
                raise errors.PostgresError(f"postgres not ready after {timeout:.0f} s")
            await asyncio.wait({self._exited}, timeout=_READY_POLL_S)

    # --- control ---------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> None:
        if self._proc.returncode is None and not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def stop(self, mode: StopMode, *, timeout: float = 60.0) -> int:
        """Stop with ``mode``; escalate to immediate, then SIGKILL, if it takes too long."""
        if self._exited.done():
            return self._exited.result()
        logger.info("stopping postgres (%s shutdown)", mode.value)
        self.signal(STOP_SIGNALS[mode])
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._exited)
        except TimeoutError:
            logger.warning("postgres did not stop in %.0f s; immediate shutdown", timeout)
        self.signal(signal.SIGQUIT)
        try:
            async with asyncio.timeout(10.0):
                return await asyncio.shield(self._exited)
        except TimeoutError:
            logger.warning("postgres ignored SIGQUIT; killing it")
        self.signal(signal.SIGKILL)
        return await asyncio.shield(self._exited)

    async def _conf_load_time(self) -> datetime.datetime:
        # A new backend inherits the postmaster's pg_conf_load_time at fork time. An open
        # one (the reconfiguration's shared session) reloads when its next query arrives
        # if the postmaster has already signalled it, which it does only after reloading
        # itself: a new time there means new connections see the new settings too.
        # Lazily: libpq loads off the start-up path (cli).
        from compute_ctl.compute import pgsession
        from compute_ctl.compute.catalog import db

        query = "select pg_catalog.pg_conf_load_time()"
        shared = db.current(self.connstr)
        if shared is not None:
            cur = await shared.execute(query)
            row = await cur.fetchone()
        else:
            async with pgsession.connect(
                self.connstr, application_name="compute_ctl:reload", timeout=5
            ) as conn:
                cur = await conn.execute(query)
                row = await cur.fetchone()
        assert row is not None
        value: datetime.datetime = row[0]
        return value

    async def reload(self, *, timeout: float = 10.0) -> None:
        """SIGHUP the postmaster and return once it has loaded its config files.

        A bare SIGHUP is asynchronous; callers (the configurator, tests) need to know that
        a new connection sees the new settings, so wait until ``pg_conf_load_time()`` is
        past the moment of the signal (same host, same clock). The signal goes first, so
        even a reload that times out (a stopped postmaster) is delivered and takes effect
        when postgres resumes. A config file with a syntax error is not loaded and times
        out.
        """
        import psycopg  # lazily: libpq loads off the start-up path (cli)

        from compute_ctl.compute.catalog import db as _db

        sent = datetime.datetime.now(datetime.UTC)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        cause = "see the PG: log lines"
        while True:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                    if await self._conf_load_time() >= sent:
                        return
            except TimeoutError:
                cause = "postgres does not answer"
            except psycopg.OperationalError as e:  # e.g. restarting after a backend crash
                cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if self._exited.done():
                raise errors.PostgresExited(self._exited.result())
            if time.monotonic() > deadline:
                raise errors.PostgresError(
                    f"postgres did not load its configuration within {timeout:.1f} s ({cause})"
                )
            await asyncio.sleep(_SHARED_POLL_S if _db.current(self.connstr) else _RELOAD_POLL_S)

    async def close(self) -> None:
        """After exit: stop re-logging (backends may keep the pipe open a little longer)."""
        if self._relog is not None and not self._relog.done():
            try:
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self._relog)
            except TimeoutError:
                self._relog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._relog
