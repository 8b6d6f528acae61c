"""A stand-in for the autoscaler-agent's side of the vm-monitor protocol.

Written from the protocol description (``shared/reference/vm_monitor.md`` §2), never
from compute_ctl's server code, and deliberately independent of
``compute_ctl.compute.vm_monitor.protocol``: it builds and reads frames as plain JSON, so
a mistake in our models cannot hide behind the same mistake in the client.

What it does, as the real agent (``pkg/agent/dispatcher.go``) does:
- dials ``ws://host:port/monitor`` and sends ``{"min":..,"max":..}`` first;
- sends envelopes ``{"content": {...}, "type": "<Name>", "id": <even>}``, ids 2, 4, 6...;
- requires every monitor frame to be a text frame holding a JSON object with a string
  ``type`` and a numeric ``id`` (anything else is a protocol violation: the test fails).

Waiting is always on received frames with a deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

__all__ = ["Agent", "Frame", "ProtocolViolation"]

DEFAULT_TIMEOUT = 5.0


class ProtocolViolation(AssertionError):
    """The monitor sent something the real agent would reject."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One monitor -> agent text frame: the exact text and its decoded object."""

    raw: str
    body: dict[str, Any]

    @property
    def type(self) -> str:
        value = self.body["type"]
        assert isinstance(value, str)
        return value

    @property
    def id(self) -> int:
        value = self.body["id"]
        assert isinstance(value, int)
        return value


def envelope(type: str, content: dict[str, Any], id: int) -> str:
    """The agent's framing: content, type, id (Go's struct order), compact."""
    return json.dumps({"content": content, "type": type, "id": id}, separators=(",", ":"))


def allocation(mem: int, cpu: float = 0.25) -> dict[str, Any]:
    return {"cpu": cpu, "mem": mem}


class Agent:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._last_id = 0
        self.inbox: list[Frame] = []
        self.close_code: int | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Agent]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                url, autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=2)
            ) as ws,
        ):
            yield cls(ws)

    def new_id(self) -> int:
        self._last_id += 2
        return self._last_id

    # --- handshake -------------------------------------------------------------------

    async def handshake(self, *, min: int = 1, max: int = 1) -> Frame:
        """Send the version range; return the monitor's answer (``version`` or ``error``)."""
        await self.ws.send_str(json.dumps({"min": min, "max": max}, separators=(",", ":")))
        msg = await self._receive(DEFAULT_TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ProtocolViolation(f"handshake answer is not a text frame: {msg.type.name}")
        body = json.loads(msg.data)
        if not isinstance(body, dict) or not (set(body) <= {"version", "error"}) or not body:
            raise ProtocolViolation(f"handshake answer is not a MonitorProtocolResponse: {body}")
        return Frame(raw=msg.data, body=body)

    # --- sending ---------------------------------------------------------------------

    async def send(
        self, type: str, content: dict[str, Any] | None = None, *, id: int | None = None
    ) -> int:
        id = self.new_id() if id is None else id
        await self.ws.send_str(envelope(type, content or {}, id))
        return id

    async def request(
        self, type: str, content: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Frame:
        """Send a request and wait for the frame that reuses its id."""
        id = await self.send(type, content)
        return await self.wait_for(lambda f: f.id == id, timeout=timeout)

    async def downscale(self, mem: int) -> Frame:
        return await self.request("DownscaleRequest", {"target": allocation(mem)})

    async def upscale(self, mem: int) -> Frame:
        return await self.request("UpscaleNotification", {"granted": allocation(mem)})

    async def health_check(self) -> Frame:
        return await self.request("HealthCheck")

    async def barrier(self) -> list[Frame]:
        """A health-check round trip; returns the monitor's own requests (odd ids) that
        arrived before its echo, and empties the inbox.

        The monitor handles messages one at a time in order, so whatever it sent before
        echoing has been received by then.
        """
        await self.health_check()
        unsolicited = [f for f in self.inbox if f.id % 2 == 1]
        self.inbox.clear()
        return unsolicited

    # --- receiving -------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[Frame], bool], *, timeout: float = DEFAULT_TIMEOUT
    ) -> Frame:
        """Take the first frame (already received, or arriving within ``timeout``) that
        matches; frames that do not match stay in ``inbox``."""
        for frame in self.inbox:
            if predicate(frame):
                self.inbox.remove(frame)
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame()
                if predicate(frame):
                    return frame
                self.inbox.append(frame)

    async def wait_type(self, type: str, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        return await self.wait_for(lambda f: f.type == type, timeout=timeout)

    async def next_frame(self) -> Frame:
        msg = await self.ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            raise ConnectionError(f"monitor closed the connection: {msg.data} {msg.extra}")
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ProtocolViolation(f"monitor sent a {msg.type.name} frame; only text is allowed")
        try:
            body = json.loads(msg.data)
        except ValueError as e:
            raise ProtocolViolation(f"monitor sent invalid JSON: {msg.data!r}") from e
        if not isinstance(body, dict):
            raise ProtocolViolation(f"monitor sent a non-object: {msg.data!r}")
        if not isinstance(body.get("type"), str):
            raise ProtocolViolation(f"monitor frame without a string type: {msg.data!r}")
        if not isinstance(body.get("id"), int) or isinstance(body.get("id"), bool):
            raise ProtocolViolation(f"monitor frame without a numeric id: {msg.data!r}")
        return Frame(raw=msg.data, body=body)

    async def next_frame_raw(self, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next text frame as sent, unchecked (for the handshake answer)."""
        msg = await self._receive(timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ProtocolViolation(f"expected a text frame, got {msg.type.name}")
        text: str = msg.data
        return text

    async def wait_closed(self, *, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Read until the monitor closes; return the close code. Other frames go to inbox."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_code = int(msg.data)
                    await self.ws.close()
                    return self.close_code
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    self.close_code = self.ws.close_code or 1006
                    return self.close_code
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.inbox.append(Frame(raw=msg.data, body=json.loads(msg.data)))

    async def _receive(self, timeout: float) -> aiohttp.WSMessage:
        async with asyncio.timeout(timeout):
            return await self.ws.receive()
