"""Hostile HTTP clients against a real compute_ctl process (issue 12, items 16, 17, 19, 22).

Each test replays an attack that worked: half-sent requests exhausting descriptors, a
flood of garbage filling the log with tracebacks, huge bodies, a browser page's
cross-site requests, a token and a carriage return reaching the log. One compute for the
module; the attacks that leave state behind (open sockets) clean up after themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from compute_ctl.compute.http import bodies, connections
from tests.http import realcompute
from tests.support import compute_process, specs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_SCRAM = (
    "SCRAM-SHA-256$4096:Y29tcHV0ZS1jdGwtZGVtbw==$CaOC+hJ3k1xAWyQF05CfkNt2kFf6eIoV1oIhsTdhGI4="
    ":sSBzp0QceU7a6HBqdDCY8PEQG68JsvtK4PHfTryBHbM="
)


@pytest.fixture(scope="module")
def compute() -> Iterator[compute_process.ComputeProcess]:
    with realcompute.compute_ctl(allow_unauthenticated=True) as running:
        yield running


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _log(compute: compute_process.ComputeProcess) -> bytes:
    return compute.log_path.read_bytes()


async def _get(url: str, *, timeout: float = 10.0) -> tuple[int, float]:
    """A fresh connection (never a pooled one): (status, seconds)."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url) as r,
    ):
        await r.read()
        return r.status, time.monotonic() - started


@contextlib.asynccontextmanager
async def _half_sent(port: int, count: int) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """``count`` connections that each sent half a request head and then went quiet."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(count):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
            writers.append(writer)
        await asyncio.gather(*(w.drain() for w in writers))
        yield writers
    finally:
        for w in writers:
            w.close()


async def _raw(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


# --- 16: idle and half-sent connections -------------------------------------------------


async def test_half_sent_requests_cannot_exhaust_descriptors(
    compute: compute_process.ComputeProcess,
) -> None:
    pid = compute.proc.pid
    before = _fds(pid)
    flood = connections.MAX_CONNECTIONS + 200
    async with _half_sent(compute.internal_port, flood):
        # Every accepted socket is a descriptor: the cap evicts the oldest idle ones.
        deadline = time.monotonic() + 20
        while _fds(pid) > before + connections.MAX_CONNECTIONS + 20:
            assert time.monotonic() < deadline, f"{_fds(pid)} descriptors (was {before})"
            await asyncio.sleep(0.1)
        status, took = await _get(f"{compute.internal}/healthz")
        assert status == 200
        assert took < 5
        # The compute's own database connections still open.
        async with await psycopg.AsyncConnection.connect(compute.dsn, connect_timeout=10) as c:
            await c.execute("SELECT 1")
        ready, _ = await _get(f"{compute.internal}/readyz")
        assert ready == 200
    assert _fds(pid) <= before + connections.MAX_CONNECTIONS + 20


async def test_a_half_sent_request_is_dropped_after_the_header_time(
    compute: compute_process.ComputeProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", compute.internal_port)
    try:
        writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        started = time.monotonic()
        # aiohttp's default would keep it for 3,630 s.
        assert await asyncio.wait_for(reader.read(), connections.IDLE_SECONDS + 15) == b""
        assert time.monotonic() - started < connections.IDLE_SECONDS + 10
    finally:
        writer.close()


async def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(
    compute: compute_process.ComputeProcess,
) -> None:
    before = _log(compute)
    garbage = b"GET / HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n"
    for _ in range(10):
        await asyncio.gather(*(_raw(compute.internal_port, garbage) for _ in range(30)))
    new = _log(compute)[len(before) :]
    assert new.count(b"Traceback") <= 1, new[-2000:]
    assert new.count(b"\n") <= 30, new[-2000:]


# --- 22: log hygiene --------------------------------------------------------------------


async def test_an_oversized_token_never_reaches_the_log(
    compute: compute_process.ComputeProcess,
) -> None:
    token = "SeCrEtToKeN" * 900  # about 10 KB, over aiohttp's 8 KB header field limit
    request = (
        f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{compute.external_port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    answer = await _raw(compute.external_port, request.encode())
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
    assert b"SeCrEtToKeN" not in _log(compute)


async def test_control_characters_in_a_path_are_escaped_in_the_log(
    compute: compute_process.ComputeProcess,
) -> None:
    status, _ = await _get(f"{compute.external}/nowhere%0dFORGED%0aline")
    assert status == 404
    log = _log(compute)
    assert b"\r" not in log
    assert b"FORGED\n" not in log
    assert b"/nowhere\\x0dFORGED\\x0aline" in log


# --- 19: cross-site requests ------------------------------------------------------------


def _spec(compute: compute_process.ComputeProcess) -> dict[str, Any]:
    return {"spec": specs.local_spec(port=compute.pg_port)}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "text/plain"}, id="text-plain"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form"),
        pytest.param(
            {"Content-Type": "application/json", "Origin": "http://evil.example"}, id="origin"
        ),
        pytest.param(
            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, id="fetch"
        ),
        pytest.param(
            # Another port on the same host is the same *site* to a browser.
            {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
            id="same-site",
        ),
    ],
)
async def test_browser_requests_cannot_configure(
    compute: compute_process.ComputeProcess, headers: dict[str, str]
) -> None:
    body = json.dumps(_spec(compute)).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{compute.external}/configure?dry_run=true", data=body, headers=headers) as r,
    ):
        assert r.status in (403, 415), await r.text()
        assert "error" in await r.json()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{compute.external}/configure?dry_run=true", json=_spec(compute)) as r,
    ):
        assert r.status == 200  # the same request from a program


async def test_internal_port_answers_only_its_own_host_name(
    compute: compute_process.ComputeProcess,
) -> None:
    port = compute.internal_port
    async with aiohttp.ClientSession() as session:
        for host, expected in (
            (f"127.0.0.1:{port}", 200),
            (f"localhost:{port}", 200),
            (f"rebound.evil.example:{port}", 403),  # DNS rebinding
            ("127.0.0.1:80", 403),
        ):
            async with session.get(f"{compute.internal}/healthz", headers={"Host": host}) as r:
                assert r.status == expected, host
        own = {"Origin": f"http://127.0.0.1:{port}"}
        async with session.get(f"{compute.internal}/healthz", headers=own) as r:
            assert r.status == 200


# --- 17: large bodies -------------------------------------------------------------------


def _big_body(size: int) -> bytes:
    """A spec of many roles, ``size`` bytes or a little more, that admission refuses only
    after parsing all of it (a bad ``suspend_timeout_seconds`` at the end)."""
    role = {"name": "r000000", "encrypted_password": _SCRAM, "options": None}
    one = len(json.dumps(role)) + 2
    roles = [{**role, "name": f"r{i:06d}"} for i in range(size // one + 1)]
    cluster = {"roles": roles, "databases": [], "settings": []}
    spec = {"format_version": 1.0, "cluster": cluster, "suspend_timeout_seconds": "bad"}
    return json.dumps({"spec": spec}).encode()


async def _dry_run(compute: compute_process.ComputeProcess, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{compute.external}/configure?dry_run=true",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        return r.status


async def test_a_body_over_the_cap_is_refused(compute: compute_process.ComputeProcess) -> None:
    assert await _dry_run(compute, _big_body(bodies.MAX_BODY_BYTES + 1024)) == 413


async def test_big_bodies_leave_healthz_responsive_and_memory_bounded(
    compute: compute_process.ComputeProcess,
) -> None:
    pid = compute.proc.pid
    rss_before = _rss_mb(pid)
    body = _big_body(bodies.MAX_BODY_BYTES - 512 * 1024)
    assert len(body) <= bodies.MAX_BODY_BYTES
    latencies: list[float] = []

    async def probe(done: asyncio.Event) -> None:
        while not done.is_set():
            _, took = await _get(f"{compute.internal}/healthz")
            latencies.append(took)
            await asyncio.sleep(0.05)

    done = asyncio.Event()
    prober = asyncio.create_task(probe(done))
    try:
        posts = asyncio.gather(*(_dry_run(compute, body) for _ in range(4)))
        codes = await asyncio.wait_for(posts, 90)
    finally:
        done.set()
        await prober
    assert codes == [400] * 4
    assert latencies
    assert max(latencies) < 2.0, latencies
    # The peak, not what is left: freed memory may stay with the process.
    assert _rss_mb(pid, "VmHWM") - rss_before < 300
