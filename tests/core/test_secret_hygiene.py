"""Secrets stay out of ``repr`` and errors; ids that reach a wire command are strict.

Pure: no PostgreSQL, no network. Each case is a defect found in review (its commit names it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compute_ctl.compute import errors, params
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import leases

SECRET = "s3cr3t-never-shown"
TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"


def test_lease_request_repr_hides_the_storage_token() -> None:
    request = leases.LeaseRequest(
        targets=(leases.Target(tenant_shard_id=TENANT, url="postgresql://127.0.0.1:1"),),
        timeline=TIMELINE,
        lsn="0/1",
        token=SECRET,
    )
    assert SECRET not in repr(request)
    assert SECRET not in str(request)


def test_params_repr_hides_connection_credentials() -> None:
    p = params.Params(
        pgdata=Path("/nonexistent"),
        connstr=f"postgresql://cloud_admin:{SECRET}@127.0.0.1:5432/postgres",
        compute_id="c",
        pgbouncer_connstr=f"host=127.0.0.1 port=6432 user=pgbouncer password={SECRET}",
        remote_ext_base_url=f"http://user:{SECRET}@127.0.0.1:1/",
    )
    assert SECRET not in repr(p)


def _spec(settings: list[dict[str, str]]) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [], "databases": [], "settings": settings},
            "mode": {"Static": "0/169AD58"},
            "pageserver_connstring": "postgresql://127.0.0.1:1",
        }
    )


@pytest.mark.parametrize("field", ["neon.tenant_id", "neon.timeline_id"])
def test_lease_ids_from_settings_refuse_a_trailing_newline(field: str) -> None:
    """``lease lsn <tenant> <timeline> <lsn> `` is a wire command: an id with a newline
    (``$`` matches before one) must not reach it."""
    values = {"neon.tenant_id": TENANT, "neon.timeline_id": TIMELINE}
    values[field] += "\n"
    spec = _spec([{"name": k, "value": v, "vartype": "string"} for k, v in values.items()])
    with pytest.raises(errors.ConfigError):
        leases.lease_request(spec, lsn="0/169AD58")


def test_compute_spec_repr_hides_tokens_and_verifiers() -> None:
    verifier = "SCRAM-SHA-256$4096:c2FsdA==$" + SECRET + ":" + SECRET
    spec = spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {
                "roles": [{"name": "app", "encrypted_password": verifier}],
                "databases": [],
                "settings": [],
            },
            "storage_auth_token": SECRET + "-storage",
            "endpoint_storage_token": SECRET + "-endpoint",
        }
    )
    assert SECRET not in repr(spec)
    assert SECRET not in str(spec)
    assert spec.cluster.roles[0].encrypted_password == verifier  # still there, just not shown
