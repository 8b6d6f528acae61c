"""The HTTP API of a real compute_ctl process: auth, configure, catalog reads, metrics,
activity, terminate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest
import requests
from joserfc.jwk import OKPKey

from tests.http import realcompute
from tests.support import compute_process, jwts, specs

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
]

_KEY: OKPKey = jwts.ed25519()


@pytest.fixture(scope="module")
def compute() -> Iterator[compute_process.ComputeProcess]:
    with realcompute.compute_ctl(jwks=[jwts.public_jwk(_KEY)]) as running:
        yield running


def _auth(**claims: Any) -> dict[str, str]:
    claims = claims or {"compute_id": realcompute.COMPUTE_ID}
    return {"Authorization": f"Bearer {jwts.token(_KEY, claims)}"}


async def test_external_port_enforces_jwt(compute: compute_process.ComputeProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{compute.external}/status") as r:
            assert r.status == 400
            assert r.headers["x-request-id"]
        async with session.get(f"{compute.external}/status", headers=_auth(compute_id="x")) as r:
            assert r.status == 403
        async with session.get(f"{compute.external}/status", headers=_auth()) as r:
            assert r.status == 200
            assert (await r.json())["status"] == "running"
        async with session.get(f"{compute.external}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    assert 'compute_ctl_up{build_tag="latest",status="running"} 1.0' in text


async def test_configure_applies_one_setting(compute: compute_process.ComputeProcess) -> None:
    spec = specs.local_spec(port=compute.pg_port, settings=[("work_mem", "7MB", "string")])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{compute.internal}/status") as r:
            etag = r.headers["ETag"]
        async with session.post(
            f"{compute.external}/configure",
            json={"spec": spec, "compute_ctl_config": {}},
            headers={**_auth(), "If-Match": '"stale"'},
        ) as r:
            assert r.status == 412
        async with session.post(
            f"{compute.external}/configure",
            json={"spec": spec, "compute_ctl_config": {}},
            headers={**_auth(), "If-Match": etag},
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
            assert r.headers["ETag"] != etag
    assert body["status"] == "running"
    assert body["desired_generation"] == body["applied_generation"]
    with psycopg.connect(compute.dsn) as conn:
        row = conn.execute("SHOW work_mem").fetchone()
    assert row == ("7MB",)


async def test_node_feeds_metrics_and_activity(compute: compute_process.ComputeProcess) -> None:
    """The node hands its registry to the server, times each reconcile, and runs the
    activity monitor: a client session moves ``last_active`` forward."""
    spec = specs.local_spec(port=compute.pg_port, settings=[("work_mem", "9MB", "string")])
    async with aiohttp.ClientSession(headers=_auth()) as session:
        async with session.post(f"{compute.external}/configure", json={"spec": spec}) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{compute.external}/metrics") as r:
            text = await r.text()
        assert 'compute_ctl_reconcile_total{outcome="applied"}' in text
        assert 'compute_ctl_startup_phase_seconds_count{phase="start_postgres"} 1.0' in text
        async with session.get(f"{compute.external}/status") as r:
            before = (await r.json())["last_active"]
        with psycopg.connect(compute.dsn, autocommit=True) as admin:
            # The monitor ignores the superuser's own sessions: act as another role.
            admin.execute("CREATE ROLE activity_probe LOGIN PASSWORD 'probe-pw'")
        user_dsn = f"postgresql://activity_probe:probe-pw@127.0.0.1:{compute.pg_port}/postgres"
        with psycopg.connect(user_dsn) as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")  # idle in transaction counts as active (Neon)
            deadline = time.monotonic() + 20
            after = before
            while after == before and time.monotonic() < deadline:
                async with session.get(f"{compute.external}/status") as r:
                    after = (await r.json())["last_active"]
                await asyncio.sleep(0.1)  # polling a condition with a deadline
    assert after is not None
    assert after != before


async def test_catalog_reads(compute: compute_process.ComputeProcess) -> None:
    async with aiohttp.ClientSession(headers=_auth()) as session:
        async with session.get(f"{compute.external}/dbs_and_roles") as r:
            assert r.status == 200
            names = {db["name"] for db in (await r.json())["databases"]}
        assert "postgres" in names
        async with session.get(
            f"{compute.external}/database_schema", params={"database": "postgres"}
        ) as r:
            assert r.status == 200
            assert "PostgreSQL database dump complete" in await r.text()
        async with session.post(f"{compute.external}/check_writability") as r:
            assert r.status == 200
        async with session.get(f"{compute.external}/readyz") as r:
            assert r.status == 200


def test_terminate_ends_the_process() -> None:
    with realcompute.compute_ctl(allow_unauthenticated=True) as running:
        response = requests.post(f"{running.external}/terminate", timeout=60)
        assert response.status_code == 200
        assert set(response.json()) == {"lsn"}
        assert running.proc.wait(timeout=60) == 0
