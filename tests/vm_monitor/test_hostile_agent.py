"""An agent that floods and never reads (issue 12, item 18): the monitor stops reading it
instead of queueing without bound, and its frames never flood the log."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct

import pytest

from tests.vm_monitor.conftest import StartMonitor, connected


def _frame(text: str) -> bytes:
    """A client text frame (masked, with an all-zero key: the payload reads as is)."""
    payload = text.encode()
    assert len(payload) < 65536
    return b"\x81" + bytes([0x80 | 126]) + struct.pack("!H", len(payload)) + b"\0" * 4 + payload


def _flood_without_reading(port: int) -> int | None:
    """Upgrade, handshake, then send health checks and never read a byte.

    Returns how many frames went out before a send blocked for 2 s (None: never).
    """
    with socket.socket() as sock:
        # Small kernel buffers, so that backpressure shows after little data.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(b"0123456789abcdef").decode()
        sock.sendall(
            (
                f"GET /monitor HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(_frame('{"min":1,"max":1}'))
        sock.settimeout(2)
        for batch in range(4000):  # 400,000 frames, about 18 MB
            frames = b"".join(
                _frame(f'{{"type":"HealthCheck","id":{2 * n + 2},"content":{{}}}}')
                for n in range(batch * 100, batch * 100 + 100)
            )
            try:
                sock.sendall(frames)
            except TimeoutError:
                return batch * 100
    return None


async def test_an_agent_that_never_reads_meets_backpressure(start_monitor: StartMonitor) -> None:
    """Health checks, each answered, but no answer is ever read.

    Once the answers fill the socket buffers (some 100,000 of them), the monitor's sends
    block. Without a bound it goes on reading every frame into its queue, so the agent's
    sends never block however much it sends; with one, they soon do.
    """
    async with start_monitor() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        blocked_after = await asyncio.to_thread(_flood_without_reading, port)
    assert blocked_after is not None, "the monitor queued every frame it could not answer"


async def test_a_flood_of_bad_frames_logs_little(
    start_monitor: StartMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.vm_monitor")
    async with start_monitor() as url, connected(url) as agent:
        caplog.clear()
        junk = "X" * 2000
        for n in range(300):
            await agent.send("NoSuchMessage", {"junk": junk}, id=2 * n + 100)
        for _ in range(300):  # every frame is still answered
            await agent.wait_type("InvalidMessage", timeout=10)
    invalid = [r for r in caplog.records if "invalid message from agent" in r.getMessage()]
    assert len(invalid) <= 11  # none at all if an earlier test used up the window
    assert all(len(r.getMessage()) < 600 for r in caplog.records)
