"""Cache prewarm/offload without PostgreSQL: the storage target (Neon's URL layout, its
error order and words), the spec's interval rule, the state bodies' exact JSON, and the
two backends refusing each other's state."""

from __future__ import annotations

from typing import Any

import pytest

from compute_ctl.compute import admission, api_models, errors
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.lfc import backends, controller, neon, storage, vanilla

TENANT, TIMELINE = "a" * 32, "b" * 32


def _spec(**fields: Any) -> spec_mod.ComputeSpec:
    raw: dict[str, Any] = {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {"roles": [], "databases": [], "settings": []},
        "tenant_id": TENANT,
        "timeline_id": TIMELINE,
    }
    raw.update(fields)
    return spec_mod.ComputeSpec.model_validate(raw)


def test_target_is_neons_url_with_the_bearer_token() -> None:
    spec = _spec(
        endpoint_id="ep-1",
        endpoint_storage_addr="127.0.0.1:9",
        endpoint_storage_token="s3cr3t-token",
    )
    where = storage.target(spec)
    assert where.url == f"http://127.0.0.1:9/{TENANT}/{TIMELINE}/ep-1/lfc_state"
    assert where.headers == {"Authorization": "Bearer s3cr3t-token"}
    assert "s3cr3t" not in repr(where)
    with pytest.raises(storage.StorageFailure, match="not a valid endpoint id"):
        storage.target(spec, endpoint_id="ep/../x")  # an id, not a path


def test_target_falls_back_to_the_settings() -> None:
    settings = [
        {"name": "neon.endpoint_storage_addr", "value": "127.0.0.1:8", "vartype": "string"},
        {"name": "neon.endpoint_storage_token", "value": "s", "vartype": "string"},
    ]
    spec = _spec(endpoint_id="e", cluster={"roles": [], "databases": [], "settings": settings})
    where = storage.target(spec)
    assert where.url.startswith("http://127.0.0.1:8/")
    assert where.token == "s"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, "pspec.endpoint_id missing, other endpoint_id not provided"),
        ({"endpoint_id": "e"}, "pspec.endpoint_storage_addr missing"),
        (
            {"endpoint_id": "e", "endpoint_storage_addr": "h:1"},
            "pspec.endpoint_storage_token missing",
        ),
        (
            {
                "endpoint_id": "e",
                "endpoint_storage_addr": "h:1",
                "endpoint_storage_token": "t",
                "tenant_id": None,
            },
            "pspec.tenant_id missing",
        ),
    ],
)
def test_missing_pieces_in_neons_order(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(storage.StorageFailure) as e:
        storage.target(_spec(**fields))
    assert str(e.value) == error


@pytest.mark.parametrize("value", [0, -5])
def test_offload_interval_must_be_positive(value: int) -> None:
    raw = _spec().model_dump(mode="json") | {"offload_lfc_interval_seconds": value}
    with pytest.raises(errors.AdmissionError, match="offload_lfc_interval_seconds"):
        admission.admit_spec(raw, rules=admission.Rules())
    raw["offload_lfc_interval_seconds"] = 1
    admission.admit_spec(raw, rules=admission.Rules())


def test_state_bodies_are_neons() -> None:
    assert (
        api_models.LfcPrewarmState(status="not_prewarmed").body() == b'{"status":"not_prewarmed"}'
    )
    failed = api_models.LfcOffloadState(status="failed", error="x")
    assert failed.body() == b'{"status":"failed","error":"x"}'
    done = api_models.LfcPrewarmState(
        status="completed",
        total=3,
        prewarmed=2,
        skipped=1,
        state_download_time_ms=0,
        uncompress_time_ms=0,
        prewarm_time_ms=5,
    )
    assert done.body() == (
        b'{"status":"completed","total":3,"prewarmed":2,"skipped":1,'
        b'"state_download_time_ms":0,"uncompress_time_ms":0,"prewarm_time_ms":5}'
    )


def test_compression_round_trip_and_bound() -> None:
    data = b"blocks" * 1000
    assert controller.decompress(controller.compress(data)) == data
    with pytest.raises(Exception):  # noqa: B017, PT011 (zstandard's own error type)
        controller.decompress(b"not zstd")


def test_block_runs() -> None:
    assert vanilla._runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert vanilla._runs([]) == []


async def test_each_backend_refuses_the_others_state() -> None:
    listing = b'{"format":"' + vanilla.FORMAT.encode() + b'","version":1}'
    assert vanilla.is_buffer_list(listing)
    with pytest.raises(backends.StateError, match="buffer list"):
        await neon.NeonBackend().restore(None, listing)  # type: ignore[arg-type]
    with pytest.raises(backends.StateError, match="not a buffer list"):
        vanilla._parse(b"\x00neon lfc state")
    with pytest.raises(backends.StateError, match="damaged"):
        vanilla._parse(listing[:-1])
    with pytest.raises(backends.StateError, match="unknown fork number 9"):
        vanilla._parse(listing[:-1] + b',"databases":[{"relations":[[1,2,9,[]]]}]}')
