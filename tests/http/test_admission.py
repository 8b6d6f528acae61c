"""``/configure`` on a real compute_ctl refuses every semantically invalid spec family
before anything changes: a 400 naming the object, for the request itself, its dry run and
its ``If-Match`` form; afterwards the compute is still ``running``, ``postgresql.conf`` is
byte-identical, postgres did not reload, the catalog is unchanged, and a valid spec is
still accepted. (Before admission, an owner that is not a role or duplicate role names
rewrote and reloaded the conf, then answered 500 and left the compute ``failed``.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from tests import invalid_specs
from tests.http import realcompute
from tests.support import compute_process, specs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def compute() -> Iterator[compute_process.ComputeProcess]:
    with realcompute.compute_ctl(allow_unauthenticated=True) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class Snapshot:
    status: dict[str, Any]
    conf: bytes
    conf_load_time: Any
    roles: list[tuple[Any, ...]]
    databases: list[tuple[Any, ...]]


def _snapshot(compute: compute_process.ComputeProcess) -> Snapshot:
    status = compute.status()
    for volatile in ("last_active",):
        status.pop(volatile, None)
    with psycopg.connect(compute.dsn, connect_timeout=10) as conn:
        load_time = conn.execute("SELECT pg_conf_load_time()").fetchone()
        roles = conn.execute(
            "SELECT rolname, rolcanlogin, rolconnlimit, rolpassword FROM pg_authid ORDER BY 1"
        ).fetchall()
        databases = conn.execute(
            "SELECT datname, datdba, datconnlimit FROM pg_database ORDER BY 1"
        ).fetchall()
    return Snapshot(
        status=status,
        conf=(compute.base / "pgdata" / "postgresql.conf").read_bytes(),
        conf_load_time=load_time,
        roles=roles,
        databases=databases,
    )


def _post(
    compute: compute_process.ComputeProcess, spec: dict[str, Any], **kwargs: Any
) -> requests.Response:
    return requests.post(
        f"{compute.external}/configure",
        json={"spec": spec, "compute_ctl_config": {}},
        timeout=60,
        **kwargs,
    )


@pytest.mark.parametrize("family", invalid_specs.FAMILIES, ids=lambda f: f.id)
def test_invalid_family_is_400_and_changes_nothing(
    compute: compute_process.ComputeProcess, family: invalid_specs.Family
) -> None:
    before = _snapshot(compute)
    assert before.status["status"] == "running"
    bad = invalid_specs.invalid(specs.local_spec(port=compute.pg_port), family)
    etag = requests.get(f"{compute.internal}/status", timeout=10).headers["ETag"]
    for variant in (
        {},
        {"params": {"dry_run": "true"}},
        {"headers": {"If-Match": etag}},
        {"headers": {"If-Match": '"stale"'}},  # admission comes first: 400, not 412
    ):
        response = _post(compute, bad, **variant)
        assert response.status_code == 400, (variant, response.text)
        assert family.needle in response.json()["error"], variant
    assert _snapshot(compute) == before


def test_a_valid_spec_is_still_accepted(compute: compute_process.ComputeProcess) -> None:
    before = _snapshot(compute)
    spec = specs.local_spec(port=compute.pg_port, settings=[("work_mem", "5MB", "string")])
    spec["cluster"]["roles"] = [{"name": "admitted_app"}]
    spec["cluster"]["databases"] = [{"name": "admitted_db", "owner": "admitted_app"}]
    response = _post(compute, spec)
    assert response.status_code == 200, response.text
    after = _snapshot(compute)
    assert after.status["status"] == "running"
    assert after.status["applied_generation"] == before.status["applied_generation"] + 1
    assert b"work_mem = '5MB'" in after.conf
    assert "admitted_app" in [r[0] for r in after.roles]
    assert "admitted_db" in [d[0] for d in after.databases]
