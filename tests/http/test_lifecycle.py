"""/status, /configure and /terminate: Neon's codes and shapes, plus ETag, If-Match, dry run."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from tests.http.conftest import Api
from tests.support import nodedouble

_MD5 = "0123456789abcdef0123456789abcdef"
S = state_mod.ComputeStatus
TENANT = "0" * 31 + "1"


def _body(**spec: Any) -> dict[str, Any]:
    return {"spec": nodedouble.minimal_spec(**spec), "compute_ctl_config": {"jwks": {"keys": []}}}


def _snapshot(status: dict[str, Any]) -> tuple[Any, ...]:
    return (
        status["status"],
        status["desired_generation"],
        status["desired_spec_hash"],
        status["applied_generation"],
    )


async def test_status_document(api: Api) -> None:
    async with api.session.get(f"{api.external}/status") as r:
        assert r.status == 200
        body = await r.json()
        assert r.headers["ETag"] == '""'
    assert list(body) == [
        "start_time",
        "tenant",
        "timeline",
        "status",
        "last_active",
        "error",
        "desired_generation",
        "applied_generation",
        "desired_spec_hash",
        "applied_spec_hash",
        "pending_restart",
        "mode",
        "pending_error",
        "migrations",
    ]
    assert body["status"] == "empty"
    assert body["last_active"] is None
    assert body["mode"] is None
    assert body["migrations"] is None  # none ran yet
    assert datetime.datetime.fromisoformat(body["start_time"]).tzinfo is not None
    assert body["start_time"].endswith("Z")


async def test_configure_from_empty_applies_and_returns_status(api: Api) -> None:
    async with api.session.post(f"{api.external}/configure", json=_body(tenant_id=TENANT)) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        etag = r.headers["ETag"]
    assert body["status"] == "running"
    assert body["tenant"] == TENANT
    assert body["mode"] == "primary"
    assert body["desired_generation"] == body["applied_generation"] == 1
    assert body["desired_spec_hash"] == body["applied_spec_hash"]
    assert etag == f'"{body["desired_spec_hash"]}"'
    expected = spec_mod.spec_hash(
        spec_mod.ComputeSpec.model_validate(nodedouble.minimal_spec(tenant_id=TENANT))
    )
    assert body["desired_spec_hash"] == expected
    async with api.session.get(f"{api.external}/status") as r:
        assert r.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"spec": null, "compute_ctl_config": {}}', "spec"),
        (b'{"compute_ctl_config": {}}', "missing field: spec"),
        (b'{"spec": {"format_version": 1}, "compute_ctl_config": {}}', "spec.cluster"),
        (
            b'{"spec": {"format_version": 1, "suspend_timeout_seconds": 1, "cluster": '
            b'{"roles": [{"encrypted_password": "x"}], "databases": []}}, '
            b'"compute_ctl_config": {}}',
            "spec.cluster.roles.0.name",
        ),
        (
            b'{"spec": {"format_version": 1, "suspend_timeout_seconds": 1, "tenant_id": "zz", '
            b'"cluster": {"roles": [], "databases": []}}, "compute_ctl_config": {}}',
            "spec.tenant_id",
        ),
    ],
)
async def test_configure_rejects_invalid_bodies_with_field_names(
    running_api: Api, payload: bytes, needle: str
) -> None:
    api = running_api
    before = await api.status()
    async with api.session.post(
        f"{api.external}/configure", data=payload, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        body = await r.json()
    assert needle in body["error"]
    assert _snapshot(await api.status()) == _snapshot(before)
    assert api.node.configure_calls == 0


async def test_configure_never_echoes_a_password(running_api: Api) -> None:
    api = running_api
    secret = "md5-super-secret-value"
    spec = nodedouble.minimal_spec()
    spec["cluster"]["roles"] = [{"name": 5, "encrypted_password": secret}]
    async with api.session.post(
        f"{api.external}/configure", json={"spec": spec, "compute_ctl_config": {}}
    ) as r:
        assert r.status == 400
        assert secret not in await r.text()


async def test_node_config_error_is_400(running_api: Api) -> None:
    api = running_api
    spec = nodedouble.minimal_spec()
    spec["cluster"]["roles"] = [{"name": "twin"}, {"name": "twin"}]
    async with api.session.post(f"{api.external}/configure", json={"spec": spec}) as r:
        assert r.status == 400
        assert "duplicate role names" in (await r.json())["error"]
    assert api.node.configure_calls == 0


async def test_configure_is_412_unless_empty_or_running(running_api: Api) -> None:
    api = running_api
    api.node.failpoints.set("configurator-apply", "pause")
    first = asyncio.create_task(
        api.session.post(f"{api.external}/configure", json=_body(tenant_id=TENANT))
    )
    await api.node.state.wait_for(lambda s: s.status == S.CONFIGURATION_PENDING, timeout=10)
    async with api.session.post(f"{api.external}/configure", json=_body()) as r:
        assert r.status == 412
        assert (await r.json())["error"] == "invalid compute status: configuration-pending"
    api.node.failpoints.set("configurator-apply", "off")
    async with await first as r:
        assert r.status == 200
        assert (await r.json())["tenant"] == TENANT


async def test_configure_failure_is_500(running_api: Api) -> None:
    api = running_api
    spec = nodedouble.minimal_spec()
    spec["cluster"]["settings"] = [
        {"name": nodedouble.FAIL_SETTING, "value": "1", "vartype": "integer"}
    ]
    async with api.session.post(
        f"{api.external}/configure", json={"spec": spec, "compute_ctl_config": {}}
    ) as r:
        assert r.status == 500
        assert (await r.json())["error"].startswith("compute configuration failed")
    assert (await api.status())["status"] == "failed"


async def test_if_match_mismatch_is_412_and_changes_nothing(running_api: Api) -> None:
    api = running_api
    before = await api.status()
    for header in ('"0000000000000000"', "W/" + f'"{before["desired_spec_hash"]}"', '""'):
        async with api.session.post(
            f"{api.external}/configure", json=_body(tenant_id=TENANT), headers={"If-Match": header}
        ) as r:
            assert r.status == 412, header
            assert "If-Match" in (await r.json())["error"]
    assert _snapshot(await api.status()) == _snapshot(before)
    assert api.node.configure_calls == 0


async def test_if_match_current_etag_is_accepted(running_api: Api) -> None:
    api = running_api
    async with api.session.get(f"{api.external}/status") as r:
        etag = r.headers["ETag"]
    for make_header in (lambda e: e, lambda e: f'"other", {e}', lambda e: "*"):
        header = make_header(etag)
        async with api.session.post(
            f"{api.external}/configure", json=_body(tenant_id=TENANT), headers={"If-Match": header}
        ) as r:
            assert r.status == 200, header
            etag = r.headers["ETag"]


async def test_if_match_star_needs_a_spec(api: Api) -> None:
    async with api.session.post(
        f"{api.external}/configure", json=_body(), headers={"If-Match": "*"}
    ) as r:
        assert r.status == 412


async def test_dry_run_returns_the_plan_and_changes_nothing(running_api: Api) -> None:
    api = running_api
    before = await api.status()
    spec = nodedouble.minimal_spec()
    spec["cluster"]["roles"] = [{"name": "alice", "encrypted_password": _MD5}]
    for flag in ("true", "1", "TRUE"):
        async with api.session.post(
            f"{api.external}/configure",
            params={"dry_run": flag},
            json={"spec": spec, "compute_ctl_config": {}},
        ) as r:
            assert r.status == 200
            body = await r.json()
        assert body == {
            "plan": [
                {
                    "phase": "CreateAndAlterRoles",
                    "database": None,
                    "sql": "CREATE ROLE 'alice' LOGIN PASSWORD <redacted>",
                    "comment": "create role alice",
                }
            ]
        }
    assert _snapshot(await api.status()) == _snapshot(before)
    assert api.node.configure_calls == 0


async def test_dry_run_flag_must_be_boolean(running_api: Api) -> None:
    api = running_api
    async with api.session.post(
        f"{api.external}/configure", params={"dry_run": "maybe"}, json=_body()
    ) as r:
        assert r.status == 400
    assert api.node.plan_calls == api.node.configure_calls == 0


async def test_terminate_modes(running_api: Api) -> None:
    api = running_api
    async with api.session.post(f"{api.external}/terminate", params={"mode": "slow"}) as r:
        assert r.status == 400
    assert (await api.status())["status"] == "running"
    async with api.session.post(f"{api.external}/terminate", params={"mode": "immediate"}) as r:
        assert r.status == 200
        assert await r.json() == {"lsn": "0/15D3A28"}
    assert (S.RUNNING, S.TERMINATION_PENDING_IMMEDIATE) in api.node.state.transitions
    async with api.session.post(f"{api.external}/terminate") as r:
        assert r.status == 201
        assert await r.json() == {"lsn": "0/15D3A28"}


async def test_terminate_defaults_to_fast(running_api: Api) -> None:
    api = running_api
    async with api.session.post(f"{api.external}/terminate") as r:
        assert r.status == 200
    assert (S.RUNNING, S.TERMINATION_PENDING_FAST) in api.node.state.transitions


async def test_terminate_is_412_while_configuring(running_api: Api) -> None:
    api = running_api
    api.node.failpoints.set("configurator-apply", "pause")
    pending = asyncio.create_task(api.session.post(f"{api.external}/configure", json=_body()))
    await api.node.state.wait_for(lambda s: s.status == S.CONFIGURATION_PENDING, timeout=10)
    async with api.session.post(f"{api.external}/terminate") as r:
        assert r.status == 412
    api.node.failpoints.set("configurator-apply", "off")
    async with await pending as r:
        assert r.status == 200


async def test_status_follows_every_change_of_the_state(running_api: Api) -> None:
    """/status is rendered once per state change, never stale."""
    api = running_api
    first = await api.status()
    state = api.node.state
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    async with state.lock():
        state.touch_active(when)
    assert (await api.status())["last_active"] == "2030-01-02T03:04:05.000006Z"
    state.pending_restart.append("shared_buffers")
    assert (await api.status())["pending_restart"] == ["shared_buffers"]
    async with state.lock():
        state.fail_attempt(state.desired_generation, "catalog: create role x failed: boom")
    body = await api.status()
    assert (body["status"], body["error"]) == ("running", None)
    assert body["pending_error"] == "catalog: create role x failed: boom"
    async with state.lock():
        state.set_status(S.FAILED, error="boom")
    body = await api.status()
    assert (body["status"], body["error"]) == ("failed", "boom")
    assert body["start_time"] == first["start_time"]


async def test_compute_ctl_config_may_be_left_out(running_api: Api) -> None:
    """Neon requires the key and ignores it; older clients (and the operator) send none."""
    api = running_api
    body = {"spec": nodedouble.minimal_spec(tenant_id=TENANT)}
    async with api.session.post(f"{api.external}/configure", json=body) as r:
        assert r.status == 200
        assert (await r.json())["tenant"] == TENANT
