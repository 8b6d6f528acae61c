"""Request bodies the event loop can afford: ``BodyGate.parse(request, parse)``.

A spec's JSON grows about tenfold once parsed into Python objects, and parsing a large one
on the event loop stalls every other request (``/healthz`` included). So a route that
takes a spec (``/configure``, its dry run) reads and parses its body through the gate:

- one body at a time per process (both servers share the gate), so concurrent large
  bodies cannot add up; a request that waited ``WAIT_SECONDS`` for its turn gets 429,
  and its body is never read;
- the body must arrive within ``READ_SECONDS`` (408 otherwise), so a slow sender cannot
  hold the gate;
- a body over ``OFF_LOOP_BYTES`` is parsed in a worker thread.

The size cap itself is aiohttp's ``client_max_size`` (``MAX_BODY_BYTES``, 413 beyond).
A spec with 10,000 roles (SCRAM verifiers, an option each), 1,000 databases and 200
settings is 2.8 MiB of JSON: 8 MiB leaves room for specs nearly three times as large.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from compute_ctl.compute.http import responses

__all__ = ["BODY_GATE", "MAX_BODY_BYTES", "BodyGate"]

MAX_BODY_BYTES = 8 * 1024 * 1024
OFF_LOOP_BYTES = 256 * 1024
WAIT_SECONDS = 30.0
READ_SECONDS = 30.0

T = TypeVar("T")


class BodyGate:
    """One spec-sized body read and parsed at a time."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def parse(self, request: web.Request, parse: Callable[[bytes], T]) -> T:
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await self._lock.acquire()
        except TimeoutError:
            raise responses.ApiError(
                429, "another request body is being processed; retry later"
            ) from None
        handed_over = False
        try:
            try:
                async with asyncio.timeout(READ_SECONDS):
                    raw = await request.read()
            except TimeoutError:
                raise responses.ApiError(
                    408, f"request body not received within {READ_SECONDS:g} s"
                ) from None
            if len(raw) <= OFF_LOOP_BYTES:
                return parse(raw)
            # The thread cannot be cancelled: if the request is, the gate stays taken until
            # the thread is done, so two large parses never overlap.
            job = asyncio.ensure_future(asyncio.to_thread(parse, raw))
            job.add_done_callback(self._release_after)
            handed_over = True
            return await asyncio.shield(job)
        finally:
            if not handed_over:
                self._lock.release()

    def _release_after(self, job: asyncio.Future[Any]) -> None:
        self._lock.release()
        if not job.cancelled():
            job.exception()  # retrieved: raised to the request if it is still waiting


BODY_GATE = web.AppKey("body_gate", BodyGate)
