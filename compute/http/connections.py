"""What a socket may cost the server: a connection cap, idle and header time, safe wire logs.

aiohttp's defaults keep an idle or half-sent connection for 3,630 s and accept without
limit, so a peer that opens connections and sends half a request exhausts the process's
file descriptors, and the compute's own PostgreSQL connections then fail with EMFILE.
Here:

- ``IDLE_SECONDS`` bounds both the time to send a complete request head and a keep-alive
  pause: aiohttp arms the same timer at accept and after each response, and closes the
  connection when it fires with no request in progress;
- ``LimitedSite`` listens like ``web.TCPSite`` but caps live connections per server
  (``MAX_CONNECTIONS``). At the cap, a new connection evicts the oldest one with no
  request in progress (idle or still sending its head); if every connection is busy, the
  newcomer gets a 503 and is closed at once, so descriptors stay bounded either way;
- ``wire_logger()`` is the logger aiohttp's protocol errors go to: a request aiohttp could
  not parse is logged as one line with the error's class, never its text (which quotes the
  offending bytes: an 8 KB ``Authorization`` header's token, a raw carriage return).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from compute_ctl.compute import loghygiene

__all__ = ["IDLE_SECONDS", "MAX_CONNECTIONS", "LimitedSite", "runner_options", "wire_logger"]

logger = logging.getLogger(__name__)

# Control planes, operators and probes send a request head in milliseconds.
IDLE_SECONDS = 15.0
# Per server. The control plane, the operator and the kubelet need a handful; two servers
# at the cap still leave half of a 1,024-descriptor limit to postgres connections.
MAX_CONNECTIONS = 256
WIRE_LOGGER = "compute_ctl.compute.http.wire"

_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 33\r\nConnection: close\r\n\r\n"
    b'{"error":"too many connections"}\n'
)


class _WireFilter(logging.Filter):
    """aiohttp's "Error handling request" record, without the offending bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and str(record.msg).startswith("Error handling request"):
            status = getattr(exc, "code", None) or getattr(exc, "status", None) or "-"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "request from %s failed in aiohttp: %s (HTTP %s)"
            record.args = (loghygiene.clip(str(remote), 64), type(exc).__name__, status)
            record.exc_info = None
            record.exc_text = None
        return True


def wire_logger() -> logging.Logger:
    """The logger for aiohttp's request handler (``RequestHandler(logger=...)``)."""
    wire = logging.getLogger(WIRE_LOGGER)
    if not any(isinstance(f, _WireFilter) for f in wire.filters):
        wire.addFilter(_WireFilter())
        wire.addFilter(loghygiene.RepeatFilter())
    return wire


def runner_options() -> dict[str, Any]:
    """``web.AppRunner`` keywords for a server exposed to untrusted peers."""
    return {"keepalive_timeout": IDLE_SECONDS, "logger": wire_logger()}


class _Refused(asyncio.Protocol):
    """A connection over the cap: one 503 and the socket is closed (its descriptor freed)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


def _idle(handler: web.RequestHandler) -> bool:
    # aiohttp sets _current_request while a handler runs (the body read included). Should a
    # later aiohttp drop the attribute, every connection counts as idle: the cap still holds.
    return handler.transport is not None and getattr(handler, "_current_request", None) is None


class _Limiter:
    """The protocol factory of a capped server: aiohttp's, after making room."""

    def __init__(self, server: web.Server, *, limit: int, name: str) -> None:
        self._server = server
        self._limit = limit
        self._name = name

    def __call__(self) -> asyncio.Protocol:
        live = [h for h in self._server.connections if h.transport is not None]
        if len(live) >= self._limit:
            victim = next((h for h in live if _idle(h)), None)
            if victim is None:
                logger.warning(
                    "%s HTTP API: %d connections, all busy: refusing one", self._name, len(live)
                )
                return _Refused()
            logger.info(
                "%s HTTP API: %d connections: closing the oldest idle one", self._name, len(live)
            )
            victim.force_close()
        return self._server()


class LimitedSite(web.TCPSite):
    """``web.TCPSite`` with at most ``limit`` live connections (see the module docstring)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        limit: int = MAX_CONNECTIONS,
        name: str = "",
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._limit = limit
        self._name = name

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert isinstance(server, web.Server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            _Limiter(server, limit=self._limit, name=self._name),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
