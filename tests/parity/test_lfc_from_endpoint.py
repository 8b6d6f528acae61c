"""``from_endpoint`` is an endpoint id, not a path: ``.`` and ``..`` are one segment after
quoting, yet the URL's normalisation would still climb out of the timeline's directory
(``/<tenant>/<timeline>/../lfc_state`` is ``/<tenant>/lfc_state``). Refused with 400."""

from __future__ import annotations

import aiohttp
import pytest

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import server
from compute_ctl.compute.lfc import storage
from tests import pgserver
from tests.support import nodedouble

TENANT = "1" * 32
TIMELINE = "2" * 32
BAD = ["..", ".", "...", "-x", "a b", "a" * 129]


def _spec() -> spec_mod.ComputeSpec:
    raw = nodedouble.minimal_spec()
    raw.update(
        tenant_id=TENANT,
        timeline_id=TIMELINE,
        endpoint_id="ep-1",
        endpoint_storage_addr="127.0.0.1:9",
        endpoint_storage_token="t",
    )
    return spec_mod.ComputeSpec.model_validate(raw)


@pytest.mark.parametrize("endpoint", BAD)
def test_target_refuses_what_is_not_an_endpoint_id(endpoint: str) -> None:
    with pytest.raises(storage.StorageFailure, match="not a valid endpoint id"):
        storage.target(_spec(), endpoint_id=endpoint)


def test_target_takes_an_endpoint_id() -> None:
    where = storage.target(_spec(), endpoint_id="ep-other.1:x_y")
    assert where.url == f"http://127.0.0.1:9/{TENANT}/{TIMELINE}/ep-other.1%3Ax_y/lfc_state"


async def test_the_route_answers_400() -> None:
    node = nodedouble.offline(
        external_http_port=pgserver.free_port(),
        internal_http_port=pgserver.free_port(),
        allow_unauthenticated=True,
        internal_full_api=True,
    )
    await node.start_running(_spec())
    metrics = metrics_mod.Metrics(build_tag="latest", state=node.state)
    base = f"http://127.0.0.1:{node.params.internal_http_port}/lfc/prewarm"
    async with server.serving(node, metrics=metrics), aiohttp.ClientSession() as session:
        for endpoint in BAD:
            async with session.post(base, params={"from_endpoint": endpoint}) as response:
                assert response.status == 400, endpoint
                assert "not a valid endpoint id" in (await response.json())["error"]
        async with session.get(base) as response:
            assert (await response.json())["status"] == "not_prewarmed"
