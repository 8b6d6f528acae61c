"""An API served from a background thread, for synchronous clients (schemathesis, benches).

``LiveDouble`` runs the node double and ``serving()`` in an event loop of its own thread,
so a synchronous test body can talk to it over loopback while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.http import conftest

COMPUTE_ID = "compute-under-test"


class LiveDouble:
    def __init__(
        self,
        pg: pgserver.PgServer,
        *,
        running: bool = True,
        jwks: list[dict[str, Any]] | None = None,
    ) -> None:
        self._pg = pg
        self._running = running
        self._jwks = jwks
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.api: conftest.Api | None = None
        self._thread = threading.Thread(target=self._main, name="live-api", daemon=True)

    @property
    def internal(self) -> str:
        assert self.api is not None
        return self.api.internal

    @property
    def external(self) -> str:
        assert self.api is not None
        return self.api.external

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        params: dict[str, Any] = {"compute_id": COMPUTE_ID}
        if self._jwks is not None:
            params["allow_unauthenticated"] = False
        async with conftest.serve_double(self._pg, **params) as api:
            if self._jwks is not None:
                api.node.state.config = spec_mod.ComputeCtlConfig(
                    jwks=spec_mod.Jwks(keys=self._jwks)
                )
            if self._running:
                await api.node.start_running()
            self.api = api
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"live API did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def live_double(
    pg: pgserver.PgServer,
    *,
    running: bool = True,
    jwks: list[dict[str, Any]] | None = None,
) -> Iterator[LiveDouble]:
    live = LiveDouble(pg, running=running, jwks=jwks)
    live.start()
    try:
        yield live
    finally:
        live.stop()
