"""``Lfc``: the prewarm and offload state machines of one compute (Neon's
``compute_prewarm.rs`` and ``spawn_lfc_offload_task``).

Each operation is single-flight: ``start_prewarm``/``start_offload`` refuse (``Busy``,
HTTP 429) while one runs, else set ``prewarming``/``offloading`` and spawn the worker.
Workers never raise: every error ends in ``failed`` (with the message, never a token)
and counts in ``compute_ctl_lfc_*_errors_total``.

Prewarm: resolve the storage target, open a maintenance session and choose the backend,
``GET`` the state (404: ``skipped``), zstd-decompress it, restore it. Offload: resolve
the target, save the state (none: ``skipped``), compress, ``PUT``. ``cancel_prewarm``
cancels a running prewarm (a query in flight is cancelled in the server by psycopg) and
ends it ``cancelled``.

``autoprewarm`` is the start's ``autoprewarm``: with the vanilla backend it waits (at
most ``AUTOPREWARM_WAIT_S``) for the prewarm before the compute reports running, so a
restarted compute is warm when it is announced; with Neon's it only starts it, as Neon.
``run_periodic_offload`` is ``offload_lfc_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import psycopg

from compute_ctl.compute import api_models, pgsession
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.lfc import backends, storage

__all__ = ["AUTOPREWARM_WAIT_S", "Busy", "Lfc"]

logger = logging.getLogger(__name__)

APPLICATION_NAME = "compute_ctl:lfc"
AUTOPREWARM_WAIT_S = 60.0
# The periodic offload re-reads the interval this often while the spec sets none.
_IDLE_RECHECK_S = 5.0
# A state never decompresses past this (a damaged or hostile object must not eat memory).
MAX_STATE_BYTES = 1 << 30
_CHUNK = 1 << 20

PrewarmState = api_models.LfcPrewarmState
OffloadState = api_models.LfcOffloadState
# Prewarm states after which a periodic offload may run (Neon): not after a failed or
# cancelled prewarm, whose cache is not the one worth saving.
_OFFLOAD_AFTER = frozenset({"completed", "not_prewarmed", "skipped"})


class Busy(Exception):
    """The operation is already running (HTTP 429)."""


class _Steps:
    """Milliseconds per step, under the names of the state's fields."""

    def __init__(self) -> None:
        self.ms: dict[str, int] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.ms[name] = int((time.monotonic() - started) * 1000)


def describe(e: BaseException) -> str:
    """The error and its causes, ``a: b: c`` (anyhow's chain); PostgreSQL's primary
    message only (never a statement)."""
    parts: list[str] = []
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, psycopg.Error):
            text = f"postgres: {seen.diag.message_primary or type(seen).__name__}"
        else:
            text = str(seen) or type(seen).__name__
        if not parts or text not in parts[-1]:
            parts.append(text)
        seen = seen.__cause__
    return ": ".join(parts)


def decompress(data: bytes) -> bytes:
    import zstandard  # here, not with the module: a compute that never prewarms skips it

    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(data) as reader:
        while chunk := reader.read(_CHUNK):
            out += chunk
            if len(out) > MAX_STATE_BYTES:
                raise backends.StateError(f"the state is larger than {MAX_STATE_BYTES} bytes")
    return bytes(out)


def compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


class Lfc:
    """Prewarm and offload of one compute. ``spec`` returns its current spec; ``connstr``
    its maintenance conninfo."""

    def __init__(
        self,
        *,
        spec: Callable[[], spec_mod.ComputeSpec | None],
        connstr: Callable[[], str],
        metrics: metrics_mod.Metrics,
    ) -> None:
        self._spec = spec
        self._connstr = connstr
        self._metrics = metrics
        self.prewarm_state = PrewarmState(status="not_prewarmed")
        self.offload_state = OffloadState(status="not_offloaded")
        self._prewarm: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by a prewarm once it knows it restores Neon's LFC (autoprewarm need not wait).
        self._detached = asyncio.Event()

    # --- triggers (routes, the node) ----------------------------------------------

    def start_prewarm(self, *, from_endpoint: str | None = None) -> asyncio.Task[None]:
        if self.prewarm_state.status == "prewarming":
            raise Busy("Multiple requests for prewarm are not allowed")
        self.prewarm_state = PrewarmState(status="prewarming")
        self._metrics.lfc_prewarms.inc()
        self._detached.clear()
        self._prewarm = self._spawn(self._run_prewarm(from_endpoint))
        return self._prewarm

    def cancel_prewarm(self) -> None:
        """Cancel the running prewarm, if any (nothing is remembered for the next one)."""
        if self._prewarm is not None and not self._prewarm.done():
            self._prewarm.cancel()

    def start_offload(self) -> asyncio.Task[None]:
        if self.offload_state.status == "offloading":
            raise Busy("Multiple requests for prewarm offload are not allowed")
        self.offload_state = OffloadState(status="offloading")
        return self._spawn(self._run_offload())

    async def autoprewarm(self, *, wait: float = AUTOPREWARM_WAIT_S) -> None:
        """Start a prewarm; wait for it unless it restores Neon's LFC, at most ``wait``."""
        try:
            task = self.start_prewarm()
        except Busy:  # a POST /lfc/prewarm came first (the API is up during the start)
            assert self._prewarm is not None
            task = self._prewarm
        detached = asyncio.ensure_future(self._detached.wait())
        try:
            await asyncio.wait({task, detached}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            detached.cancel()
        if not task.done() and not self._detached.is_set():
            logger.warning("autoprewarm still running after %.0f s; continuing in background", wait)

    async def run_periodic_offload(self, interval: Callable[[], int | None]) -> None:
        """Until cancelled: every ``interval()`` seconds (re-read each time; first tick one
        interval after start), offload, unless a prewarm runs or did not end well, or an
        offload is still running."""
        while True:
            seconds = interval()
            if seconds is None:
                await asyncio.sleep(_IDLE_RECHECK_S)
                continue
            await asyncio.sleep(seconds)
            if (
                self.prewarm_state.status in _OFFLOAD_AFTER
                and self.offload_state.status != "offloading"
            ):
                await self.start_offload()
            else:
                logger.info(
                    "periodic offload skipped: prewarm %s, offload %s",
                    self.prewarm_state.status,
                    self.offload_state.status,
                )

    async def close(self) -> None:
        """Cancel every worker (the compute is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- workers ---------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[pgsession.Connection, backends.Backend]]:
        connstr = self._connstr()

        def connect(
            dbname: str | None,
        ) -> contextlib.AbstractAsyncContextManager[pgsession.Connection]:
            return pgsession.connect(connstr, application_name=APPLICATION_NAME, dbname=dbname)

        async with connect(None) as conn:
            yield conn, await backends.choose(conn, connect=connect)

    async def _run_prewarm(self, from_endpoint: str | None) -> None:
        try:
            self.prewarm_state = await self._prewarm_steps(from_endpoint)
        except asyncio.CancelledError:
            logger.info("prewarm cancelled")
            self.prewarm_state = PrewarmState(status="cancelled")
        except Exception as e:
            logger.error("prewarm failed: %s", describe(e))
            self._metrics.lfc_prewarm_errors.inc()
            self.prewarm_state = PrewarmState(status="failed", error=describe(e))
        finally:
            self._detached.set()

    async def _prewarm_steps(self, from_endpoint: str | None) -> PrewarmState:
        where = storage.target(self._spec(), endpoint_id=from_endpoint)
        # The backend is chosen first (Neon downloads first): autoprewarm must know early
        # whether to hold the start for it.
        async with self._session() as (conn, backend):
            if backend.name == "neon":
                self._detached.set()
            steps = _Steps()
            with steps.timed("state_download_time_ms"):
                data = await storage.download(where)
            if data is None:
                logger.info("prewarm skipped: the endpoint storage has no state")
                return PrewarmState(status="skipped")
            with steps.timed("uncompress_time_ms"):
                state = await asyncio.to_thread(decompress, data)
            with steps.timed("prewarm_time_ms"):
                counts = await backend.restore(conn, state)
        logger.info(
            "prewarm (%s) completed: %d of %d pages loaded",
            backend.name,
            counts.prewarmed,
            counts.total,
        )
        return PrewarmState(
            status="completed",
            total=counts.total,
            prewarmed=counts.prewarmed,
            skipped=counts.skipped,
            **steps.ms,
        )

    async def _run_offload(self) -> None:
        self._metrics.lfc_offloads.inc()
        try:
            self.offload_state = await self._offload_steps()
        except asyncio.CancelledError:
            self.offload_state = OffloadState(status="failed", error="cancelled")
            raise
        except Exception as e:
            logger.error("offload failed: %s", describe(e))
            self._metrics.lfc_offload_errors.inc()
            self.offload_state = OffloadState(status="failed", error=describe(e))

    async def _offload_steps(self) -> OffloadState:
        where = storage.target(self._spec())
        steps = _Steps()
        with steps.timed("state_query_time_ms"):
            async with self._session() as (conn, backend):
                state = await backend.save(conn)
        if state is None:
            logger.info("offload skipped: no cache state")
            return OffloadState(status="skipped")
        with steps.timed("compress_time_ms"):
            data = await asyncio.to_thread(compress, state)
        with steps.timed("state_upload_time_ms"):
            await storage.upload(where, data)
        logger.info("offload (%s) completed: %d bytes", backend.name, len(data))
        return OffloadState(status="completed", **steps.ms)
