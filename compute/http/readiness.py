"""Readiness of postgres for ``GET /readyz``: single-flight, cached, one kept session.

``/readyz`` is open (the kubelet has no token), so a flood of probes must not cost a
connection each: that used up ``max_connections`` and locked applications out. Here one
probe runs at a time and every concurrent caller shares its answer; an answer is reused
for ``ttl`` seconds; the probe runs ``SELECT 1`` on one kept ``pgsession`` session,
opened again only after a failure. So ``/readyz`` holds at most one backend whatever the
request rate.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from compute_ctl.compute import pgsession

__all__ = ["Readiness"]

APPLICATION_NAME = "compute_ctl:readyz"


class Readiness:
    """The cached answer to "does postgres answer?" (``None`` yes, else why not)."""

    def __init__(self, connstr: str, *, ttl: float = 1.0, timeout: float = 2.0) -> None:
        self._connstr = connstr
        self.ttl = ttl
        self.timeout = timeout
        self._conn: pgsession.Connection | None = None
        self._probe: asyncio.Task[str | None] | None = None
        self._answer: str | None = None
        self._answered_at = -float("inf")
        self.probes = 0
        """Probes run so far (for tests)."""

    async def check(self) -> str | None:
        if time.monotonic() - self._answered_at < self.ttl:
            return self._answer
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run())
        # Shielded: a caller that goes away does not cancel the others' probe.
        return await asyncio.shield(self._probe)

    async def _run(self) -> str | None:
        self.probes += 1
        answer: str | None = None
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await pgsession.open_session(
                    self._connstr, application_name=APPLICATION_NAME, timeout=self.timeout
                )
            async with asyncio.timeout(self.timeout):
                await self._conn.execute("SELECT 1")
        except (psycopg.Error, OSError, TimeoutError) as e:
            answer = f"postgres does not answer: {type(e).__name__}"
            await self.close()
        self._answer = answer
        self._answered_at = time.monotonic()
        return answer

    async def close(self) -> None:
        """Drop the kept session (on failure, and when the compute is not running)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
