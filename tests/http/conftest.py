"""Fixtures of the HTTP tier: the node double served on real loopback ports."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from compute_ctl.compute.http import server
from tests import pgserver
from tests.support import nodedouble


@dataclasses.dataclass
class Api:
    node: nodedouble.NodeDouble
    session: aiohttp.ClientSession

    @property
    def external(self) -> str:
        return f"http://127.0.0.1:{self.node.params.external_http_port}"

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.node.params.internal_http_port}"

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.internal}/status") as r:
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body


ApiFactory = Callable[..., contextlib.AbstractAsyncContextManager[Api]]


@contextlib.asynccontextmanager
async def serve_double(
    pg: pgserver.PgServer,
    *,
    failpoints_enabled: bool = True,
    **params: Any,
) -> AsyncIterator[Api]:
    params.setdefault("compute_id", "compute-under-test")
    params.setdefault("allow_unauthenticated", True)
    node = nodedouble.NodeDouble(
        params=nodedouble.Params(
            external_http_port=pgserver.free_port(),
            internal_http_port=pgserver.free_port(),
            **params,
        ),
        dsn=pg.dsn(),
        failpoints_enabled=failpoints_enabled,
    )
    async with server.serving(node), aiohttp.ClientSession() as session:
        yield Api(node=node, session=session)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[pgserver.PgServer]:
    """A PostgreSQL for one test module that writes to the catalog (never the shared one)."""
    with pgserver.running() as server:
        yield server


@pytest.fixture
async def catalog_api(own_pg: pgserver.PgServer) -> AsyncIterator[Api]:
    """A running double over the module's own postgres."""
    async with serve_double(own_pg) as served:
        await served.node.start_running()
        yield served


@pytest.fixture
def make_api(pg_session: pgserver.PgServer) -> ApiFactory:
    """``async with make_api(**params) as api``: a double served over the session's postgres."""

    def factory(**params: Any) -> contextlib.AbstractAsyncContextManager[Api]:
        return serve_double(pg_session, **params)

    return factory


@pytest.fixture
async def api(make_api: ApiFactory) -> AsyncIterator[Api]:
    """A double in status ``empty``, open on both ports (no keys, unauthenticated allowed)."""
    async with make_api() as served:
        yield served


@pytest.fixture
async def running_api(api: Api) -> Api:
    await api.node.start_running()
    return api
