"""The agent's websocket: the handshake, typed sends, id minting, and one connection at a time.

``Dispatcher`` wraps one connection: it negotiates the protocol version, sends only
``protocol.Outbound`` models (never arbitrary text), reads text frames into
``protocol.Inbound`` (or ``protocol.InvalidFrame``), and mints our own ids: odd, from 3,
per connection, so they never collide with the agent's even ids. Replies reuse the
request's id; that is the runner's business.

``Switchboard`` enforces upstream's "newer connection wins": a newcomer kills the
incumbent and waits (briefly) for it to finish before its own session starts, so the two
never share a cgroup watcher or an LFC connection.

Logged frames are clipped (``loghygiene.clip``): an agent's text never fills the log. A
send that the agent does not take within ``SEND_TIMEOUT`` (it stopped reading) ends the
connection.

No scaling decision is made here (``runner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from compute_ctl.compute import loghygiene
from compute_ctl.compute.vm_monitor import errors, protocol

__all__ = ["KILLED", "STOPPED", "Dispatcher", "Seat", "Switchboard"]

logger = logging.getLogger(__name__)

KILLED = "monitor was killed due to new connection"
STOPPED = "vm-monitor is stopping"
SEND_TIMEOUT = 10.0
# Agent messages are a few hundred bytes; aiohttp's default would take 4 MiB frames.
MAX_FRAME_BYTES = 64 * 1024
_CLOSING = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class Dispatcher:
    """One agent connection after the HTTP upgrade."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._counter = 1  # odd; bumped by 2 before each use, so our first id is 3
        self.version: int | None = None

    async def handshake(self) -> int:
        """Read the agent's version range; answer ``{"version":1}`` or ``{"error":...}``.

        Beyond upstream, an unreadable first frame also gets an ``{"error":...}`` answer
        (upstream just drops the socket); the agent treats either as a failed handshake.
        """
        msg = await self._ws.receive()
        if msg.type in _CLOSING or msg.type is aiohttp.WSMsgType.ERROR:
            raise errors.ConnectionClosed(
                "websocket connection closed while performing protocol handshake"
            )
        if msg.type is not aiohttp.WSMsgType.TEXT:
            reason = f"received non-text message during protocol handshake: {msg.type.name}"
            await self._send_text(protocol.error_response(reason))
            raise errors.HandshakeError(reason)
        try:
            agent = protocol.parse_version_range(msg.data)
        except protocol.InvalidFrame as e:
            await self._send_text(protocol.error_response(e.error))
            raise errors.HandshakeError(e.error) from e
        logger.info("received protocol version range %s", loghygiene.clip(str(agent)))
        version = protocol.negotiate(agent)
        if version is None:
            await self._send_text(protocol.error_response(agent))
            raise errors.HandshakeError(
                f"protocol version range {agent} does not overlap with {protocol.OURS}"
            )
        await self._send_text(protocol.version_response(version))
        self.version = version
        return version

    def next_id(self) -> int:
        self._counter += 2
        return self._counter

    async def send(self, message: protocol.Outbound) -> None:
        if isinstance(message, protocol.HealthCheckEcho):
            logger.debug("sending message %s", loghygiene.clip(repr(message)))
        else:
            logger.info("sending message %s", loghygiene.clip(repr(message)))
        await self._send_text(protocol.encode(message))

    async def _send_text(self, text: str) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._ws.send_str(text)
        except TimeoutError as e:
            raise errors.ConnectionClosed(
                f"agent did not take a message within {SEND_TIMEOUT:g} s"
            ) from e
        except (ConnectionError, RuntimeError) as e:
            raise errors.ConnectionClosed(f"stream error sending message: {e}") from e

    async def receive(self) -> protocol.Inbound | protocol.InvalidFrame | None:
        """The next agent message, or the reason it is unusable; ``None`` once closed.

        Non-text frames are skipped with a warning, as upstream does.
        """
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    message = protocol.parse_inbound(msg.data)
                except protocol.InvalidFrame as e:
                    return e
                if isinstance(message, protocol.HealthCheck):
                    logger.debug("received message %s", loghygiene.clip(repr(message)))
                else:
                    logger.info("received message %s", loghygiene.clip(repr(message)))
                return message
            if msg.type in _CLOSING or msg.type is aiohttp.WSMsgType.ERROR:
                return None
            logger.warning(
                "problem processing incoming message: agent should only send text messages "
                "but received %s",
                msg.type.name,
            )

    async def close(self, *, code: int, message: str) -> None:
        if not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.close(code=code, message=message.encode()[:120])


class Seat:
    """The one live connection's place: how to kill it, and when it has gone."""

    def __init__(self) -> None:
        self.killed = asyncio.Event()
        self.gone = asyncio.Event()
        self.task: asyncio.Task[tuple[int, str]] | None = None
        self.reason = ""
        self._on_kill: list[Callable[[str], None]] = []

    def on_kill(self, callback: Callable[[str], None]) -> None:
        self._on_kill.append(callback)
        if self.killed.is_set():
            callback(self.reason)

    def kill(self, reason: str) -> None:
        """Stop the session: between messages once serving, at once while setting up."""
        if self.killed.is_set():
            return
        self.reason = reason
        self.killed.set()
        if not self._on_kill and self.task is not None:
            self.task.cancel()  # still in setup: nothing worth finishing
        for callback in self._on_kill:
            callback(reason)

    async def wait_gone(self, grace: float) -> None:
        """Wait for a clean exit; past ``grace`` seconds, cancel the session outright."""
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(self.gone.wait())
        except TimeoutError:
            if self.task is not None:
                logger.warning("old monitor connection did not stop in %.1f s: cancelling", grace)
                self.task.cancel()
            await self.gone.wait()


class Switchboard:
    """At most one live agent connection; the newest wins."""

    def __init__(self, *, grace: float = 2.0) -> None:
        self._grace = grace
        self._current: Seat | None = None

    @contextlib.asynccontextmanager
    async def seat(self) -> AsyncIterator[Seat]:
        seat = Seat()
        old, self._current = self._current, seat
        try:
            if old is not None:
                logger.info("new agent connection: killing the previous one")
                old.kill(KILLED)
                await old.wait_gone(self._grace)
            yield seat
        finally:
            seat.gone.set()
            if self._current is seat:
                self._current = None

    async def close(self) -> None:
        """Kill the live connection (if any) and wait until it has gone."""
        seat = self._current
        if seat is not None:
            seat.kill(STOPPED)
            await seat.wait_gone(self._grace)
