"""What every request gets: x-request-id, JSON errors, 404/405, port separation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from compute_ctl.compute import errors
from compute_ctl.compute.http import server
from tests import pgserver
from tests.http.conftest import Api, ApiFactory
from tests.support import nodedouble

pytestmark = pytest.mark.postgres


async def test_unknown_path_is_json_404_on_both_ports(api: Api) -> None:
    for base in (api.external, api.internal):
        async with api.session.get(f"{base}/no/such/path") as r:
            assert r.status == 404
            assert r.content_type == "application/json"
            assert set(await r.json()) == {"error"}


async def test_wrong_method_is_json_405_with_allow(api: Api) -> None:
    async with api.session.delete(f"{api.external}/status") as r:
        assert r.status == 405
        assert "error" in await r.json()
        assert "GET" in r.headers["Allow"]
    async with api.session.get(f"{api.internal}/configure") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
    async with api.session.head(f"{api.internal}/status") as r:
        assert r.status == 200
    async with api.session.put(f"{api.internal}/metrics") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "GET, HEAD"


async def test_request_id_is_echoed(api: Api) -> None:
    for path in ("/status", "/nope", "/metrics"):
        async with api.session.get(
            f"{api.external}{path}", headers={"x-request-id": "abc-123"}
        ) as r:
            assert r.headers["x-request-id"] == "abc-123"


async def test_request_id_is_generated_when_missing_or_unsafe(api: Api) -> None:
    seen = set()
    for headers in ({}, {"x-request-id": "x" * 500}, {"x-request-id": "a b\tc"}):
        async with api.session.get(f"{api.internal}/status", headers=headers) as r:
            generated = r.headers["x-request-id"]
            assert str(uuid.UUID(generated)) == generated
            assert uuid.UUID(generated).version == 4
            seen.add(generated)
    assert len(seen) == 3


async def test_request_id_on_errors_and_streams(running_api: Api) -> None:
    api = running_api
    json_type = {"Content-Type": "application/json"}
    async with api.session.post(f"{api.internal}/configure", data=b"{", headers=json_type) as r:
        assert r.status == 400
        assert r.headers["x-request-id"]
    async with api.session.get(
        f"{api.internal}/database_schema", params={"database": "postgres"}
    ) as r:
        assert r.status == 200
        assert r.headers["x-request-id"]
    # A streamed response sends its headers before the wrapper sees it: the id it carries
    # is still this request's own (echoed), not another request's.
    async with api.session.get(
        f"{api.internal}/database_schema",
        params={"database": "postgres"},
        headers={"x-request-id": "stream-42"},
    ) as r:
        assert r.status == 200
        assert r.headers["x-request-id"] == "stream-42"


async def test_internal_routes_are_not_served_externally(api: Api) -> None:
    for path in ("/grants", "/extensions", "/failpoints"):
        async with api.session.post(f"{api.external}{path}", json={}) as r:
            assert r.status == 404, path
        async with api.session.post(f"{api.internal}{path}", json={}) as r:
            assert r.status != 404, path


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses listening on ``port``, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add(".".join(octets))
    return found


async def test_internal_port_binds_loopback_only(make_api: ApiFactory) -> None:
    host = "0.0.0.0"
    async with make_api(external_http_host=host) as api:
        assert _listening_addresses(api.node.params.internal_http_port) == {"127.0.0.1"}
        assert _listening_addresses(api.node.params.external_http_port) == {host}


async def test_a_port_in_use_is_a_clear_config_error(api: Api) -> None:
    busy = api.node.params.internal_http_port
    node = nodedouble.offline(external_http_port=pgserver.free_port(), internal_http_port=busy)
    with pytest.raises(errors.ConfigError, match="--internal-http-port"):
        async with server.serving(node):
            pass
    # The external server it had started is closed again.
    external = node.params.external_http_port
    assert _listening_addresses(external) == set()
