"""Bounded libpq calls to storage services: time out or cancel without waiting.

psycopg answers a cancelled query by sending a cancel request and waiting up to 5 s
for the server to stop (psycopg's ``AsyncConnection.wait``); a hung safekeeper
would turn Neon's 100 ms fast-path timeout into seconds. Here the query runs in an
inner task that is never cancelled: on timeout or cancellation the socket is shut
down instead, libpq sees the connection end, and the inner task fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

__all__ = ["bounded", "cut"]

T = TypeVar("T")


def cut(conn: psycopg.AsyncConnection[object]) -> None:
    """Shut the connection's socket down (both ways) without closing libpq's fd."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


async def bounded(
    conn: psycopg.AsyncConnection[object],
    call: Callable[[], Awaitable[T]],
    *,
    timeout: float | None,
) -> T:
    """Run ``call()`` on ``conn``; on timeout or cancellation cut the connection."""
    inner = asyncio.ensure_future(call())
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(inner)
    except BaseException:
        if not inner.done():
            cut(conn)
            await asyncio.gather(inner, return_exceptions=True)
        raise
