"""Shared by the cache prewarm/offload tests: a compute with its HTTP API and an endpoint
storage, both on loopback, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from compute_ctl.compute import node as node_mod
from compute_ctl.compute.http import server
from tests import pgserver
from tests.core import helpers
from tests.support import endpoint_storage

TENANT = "1" * 32
TIMELINE = "2" * 32
ENDPOINT = "ep-lfc-test"


def spec(
    *,
    port: int,
    storage: endpoint_storage.EndpointStorage,
    endpoint_id: str = ENDPOINT,
    token_endpoint: str | None = None,
    settings: Sequence[tuple[str, str, str]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A local spec naming the endpoint storage, with a token for ``token_endpoint``
    (default: ``endpoint_id``); ``fields`` are added to the spec."""
    raw = helpers.spec_json(port=port, settings=settings)
    raw.update(
        tenant_id=TENANT,
        timeline_id=TIMELINE,
        endpoint_id=endpoint_id,
        endpoint_storage_addr=storage.addr,
        endpoint_storage_token=storage.token(
            tenant_id=TENANT, timeline_id=TIMELINE, endpoint_id=token_endpoint or endpoint_id
        ),
        **fields,
    )
    return raw


class Api:
    """The compute's HTTP API (internal port, whole API, no token)."""

    def __init__(self, n: node_mod.ComputeNode, session: aiohttp.ClientSession) -> None:
        self.node = n
        self.session = session
        self.base = f"http://127.0.0.1:{n.params.internal_http_port}"
        self.external = f"http://127.0.0.1:{n.params.external_http_port}"

    async def call(self, method: str, path: str) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path) as response:
            text = await response.text()
            is_json = response.content_type == "application/json" and text
            return response.status, (await response.json() if is_json else text)

    async def wait_state(
        self, what: str, statuses: Sequence[str], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """``GET /lfc/<what>`` until its status is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = await self.call("GET", f"/lfc/{what}")
            assert code == 200, body
            if body["status"] in statuses:
                return dict(body)
            assert time.monotonic() < deadline, f"/lfc/{what} is {body}, not in {statuses}"
            await asyncio.sleep(0.02)

    async def metric(self, name: str) -> float:
        async with self.session.get(self.base + "/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")


def make_node(
    pgdata: Path, *, port: int, raw_spec: dict[str, Any], keep_pgdata: bool = False
) -> node_mod.ComputeNode:
    return node_mod.ComputeNode(
        helpers.make_params(
            pgdata=pgdata,
            port=port,
            internal_full_api=True,
            keep_pgdata=keep_pgdata,
            resync_interval=3600,
        ),
        config=helpers.config(raw_spec),
    )


@contextlib.asynccontextmanager
async def running(n: node_mod.ComputeNode) -> AsyncIterator[Api]:
    """The node running, its API served; terminated (fast) on exit."""
    async with (
        server.serving(n, metrics=n.metrics),
        helpers.run_node(n),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
    ):
        try:
            yield Api(n, session)
        finally:
            await n.terminate("fast")


async def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


def free_port() -> int:
    return pgserver.free_port()
