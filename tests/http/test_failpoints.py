"""POST /failpoints on the internal port: Neon's shape, all-or-nothing, 412 when disabled."""

from __future__ import annotations

import pytest

from tests.http.conftest import Api, ApiFactory


async def test_set_and_clear_failpoints(api: Api) -> None:
    body = [{"name": "before-apply", "actions": "pause"}, {"name": "x", "actions": "sleep(5)"}]
    async with api.session.post(f"{api.internal}/failpoints", json=body) as r:
        assert r.status == 200
        assert await r.read() == b""
    assert api.node.failpoints.get("before-apply") == "pause"
    assert api.node.failpoints.get("x") == "sleep(5)"
    async with api.session.post(
        f"{api.internal}/failpoints", json=[{"name": "before-apply", "actions": "off"}]
    ) as r:
        assert r.status == 200
    assert api.node.failpoints.get("before-apply") == "off"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a", "actions": "pause"},
        [{"name": "a"}],
        [{"name": "", "actions": "pause"}],
        [{"name": "a", "actions": "pause"}, {"name": "b", "actions": "explode"}],
        [{"name": "a", "actions": "sleep(soon)"}],
    ],
)
async def test_a_bad_request_sets_nothing(api: Api, body: object) -> None:
    async with api.session.post(f"{api.internal}/failpoints", json=body) as r:
        assert r.status == 400
        assert "error" in await r.json()
    assert api.node.failpoints.get("a") == "off"


async def test_disabled_failpoints_are_412(make_api: ApiFactory) -> None:
    async with make_api(failpoints_enabled=False) as api:
        body = [{"name": "a", "actions": "pause"}]
        async with api.session.post(f"{api.internal}/failpoints", json=body) as r:
            assert r.status == 412
            assert "--failpoints" in (await r.json())["error"]
        async with api.session.post(f"{api.internal}/failpoints", json={"bad": 1}) as r:
            assert r.status == 400  # the body is checked first, as in Neon
