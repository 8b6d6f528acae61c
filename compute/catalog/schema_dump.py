"""``pg_dump --schema-only`` of one database, bounded (``GET /database_schema``).

Owns the pg_dump process, so the route only streams bytes:

- at most ``SchemaDumps.limit`` dumps run at once; a request that finds no free slot
  within ``queue_timeout`` seconds raises ``errors.Busy`` (HTTP 503), so a flood cannot
  use up the connection slots the application needs;
- ``--lock-wait-timeout``: a dump blocked by a lock fails after ``lock_wait_timeout``
  seconds instead of waiting as long as the lock is held;
- the dump is killed when the caller leaves the ``dump`` context, and when ``gone()``
  (the client went away) turns true while it waits for output.

pg_dump runs as the PostgreSQL OS user through ``pgtools``, on ``pgsession``'s
connection policy, with the password (if any) in its environment, never on the command
line. A missing database is ``errors.NotFound``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from psycopg import conninfo as conninfo_mod

from compute_ctl.compute import errors, pgsession, pgtools
from compute_ctl.compute.catalog import ondemand

__all__ = ["Dump", "SchemaDumps"]

logger = logging.getLogger(__name__)

APPLICATION_NAME = "compute_ctl:pg_dump"
CHUNK = 65536
_GONE_POLL_SECONDS = 0.25


class Dump:
    """One running pg_dump; ``read`` returns its output chunk by chunk, ``b""`` at the end."""

    def __init__(
        self, proc: asyncio.subprocess.Process, *, dbname: str, gone: Callable[[], bool]
    ) -> None:
        self._proc = proc
        self._dbname = dbname
        self._gone = gone
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._stdout = proc.stdout
        self._stderr = asyncio.ensure_future(proc.stderr.read())
        self.started = False

    async def read(self) -> bytes:
        """The next chunk. Before the first byte, a failed dump raises (``NotFound`` for a
        database dropped meanwhile); after it, a failure is only logged (headers are out)."""
        reading = asyncio.ensure_future(self._stdout.read(CHUNK))
        try:
            while not reading.done():
                await asyncio.wait({reading}, timeout=_GONE_POLL_SECONDS)
                if not reading.done() and self._gone():
                    logger.info("schema dump of %r: the client went away", self._dbname)
                    if self.started:
                        return b""  # the caller ends the stream; leaving kills pg_dump
                    raise errors.ComputeError("the client went away; pg_dump stopped")
        finally:
            if not reading.done():
                reading.cancel()
        chunk = reading.result()
        if chunk:
            self.started = True
            return chunk
        code = await self._proc.wait()
        if code != 0:
            err = (await self._stderr).decode(errors="replace").strip()
            logger.warning("pg_dump of %r exited with code %s: %s", self._dbname, code, err[-2000:])
            if not self.started:
                if "does not exist" in err:
                    raise errors.NotFound(f"database {self._dbname!r} does not exist")
                if "lock" in err:
                    raise errors.Busy(f"pg_dump of {self._dbname!r} could not get a lock in time")
                raise errors.ComputeError(f"pg_dump failed with code {code}")
        return b""

    async def close(self) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if not self._stderr.done():
            self._stderr.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr


class SchemaDumps:
    """The pg_dump slots of one compute."""

    def __init__(
        self,
        *,
        limit: int = 2,
        queue_timeout: float = 5.0,
        lock_wait_timeout: float = 5.0,
    ) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self.lock_wait_timeout = lock_wait_timeout
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def dump(
        self,
        *,
        connstr: str,
        tools: pgtools.PgTools,
        dbname: str,
        gone: Callable[[], bool],
    ) -> AsyncIterator[Dump]:
        """A running pg_dump of ``dbname``, killed on exit; holds one slot meanwhile."""
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise errors.Busy(f"{self.limit} schema dumps are running; try again later") from None
        try:
            if gone():
                raise errors.ComputeError("the client went away before its schema dump began")
            await ondemand.require_database(connstr, dbname)
            proc = await self._spawn(connstr=connstr, tools=tools, dbname=dbname)
            running = Dump(proc, dbname=dbname, gone=gone)
            try:
                yield running
            finally:
                await running.close()
        finally:
            self._slots.release()

    async def _spawn(
        self, *, connstr: str, tools: pgtools.PgTools, dbname: str
    ) -> asyncio.subprocess.Process:
        params = conninfo_mod.conninfo_to_dict(
            pgsession.conninfo(connstr, application_name=APPLICATION_NAME, dbname=dbname)
        )
        env = {}
        if "password" in params:  # never on a command line, where ps would show it
            env["PGPASSWORD"] = str(params.pop("password"))
        lock_wait_ms = max(1, int(self.lock_wait_timeout * 1000))
        try:
            return await tools.spawn(
                [
                    tools.tool("pg_dump"),
                    "--schema-only",
                    f"--lock-wait-timeout={lock_wait_ms}",
                    f"--dbname={conninfo_mod.make_conninfo('', **params)}",
                ],
                env=env,
            )
        except OSError as e:
            raise errors.PostgresError(f"failed to start pg_dump: {e}") from e
