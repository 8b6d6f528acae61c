"""``/metrics`` families under Neon's names, types and labels: unlabelled ones present at
0 from the start, labelled ones once used; the control-plane request counter labelled
as Neon prints statuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import exposition
from prometheus_client.parser import text_string_to_metric_families

from compute_ctl.compute import controlplane, errors, metrics, state
from tests import pgserver


def _families(m: metrics.Metrics) -> dict[str, Any]:
    text = exposition.generate_latest(m.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_neon_families_types_and_labels() -> None:
    m = metrics.Metrics(build_tag="v1", state=state.ComputeState())
    found = _families(m)
    # Unlabelled: present at 0 before any use.
    for name, kind in [
        ("compute_pg_current_downtime_ms", "gauge"),
        ("compute_pg_downtime_ms", "counter"),  # exposed as compute_pg_downtime_ms_total
        ("compute_audit_log_dir_size", "gauge"),
    ]:
        assert found[name].type == kind, name
        assert [s.value for s in found[name].samples if not s.name.endswith("_created")] == [0]
    up = found["compute_ctl_up"]
    assert up.type == "gauge"
    assert [(s.labels, s.value) for s in up.samples] == [
        ({"build_tag": "v1", "status": "empty"}, 1.0)
    ]
    # Labelled: absent until first used, then with Neon's label names.
    for name in (
        "compute_installed_extensions",
        "compute_ctl_cplane_requests",
        "compute_ctl_db_migration_failed",
        "compute_ctl_remote_ext_requests",
    ):
        assert not found.get(name) or not found[name].samples, name
    m.migration_failed(4)
    m.cplane_request(rpc="GetConfig", http_status="200 OK")
    m.set_installed_extensions([(("plpgsql", "1.0", "1"), 3)])
    m.remote_ext_request(http_status="200 OK", filename="anon.tar.zst")
    found = _families(m)
    labels = {
        name: {k for s in found[name].samples for k in s.labels}
        for name in (
            "compute_installed_extensions",
            "compute_ctl_cplane_requests",
            "compute_ctl_db_migration_failed",
            "compute_ctl_remote_ext_requests",
        )
    }
    assert labels == {
        "compute_installed_extensions": {"extension_name", "version", "owned_by_superuser"},
        "compute_ctl_cplane_requests": {"rpc", "http_status"},
        "compute_ctl_db_migration_failed": {"migration_id"},
        "compute_ctl_remote_ext_requests": {"http_status", "filename"},
    }
    text = exposition.generate_latest(m.registry).decode()
    assert 'compute_ctl_db_migration_failed_total{migration_id="4"} 1.0' in text
    assert 'compute_ctl_cplane_requests_total{http_status="200 OK",rpc="GetConfig"} 1.0' in text
    assert (
        'compute_ctl_remote_ext_requests_total{filename="anon.tar.zst",http_status="200 OK"} 1.0'
        in text
    )


async def test_control_plane_requests_are_recorded_per_attempt() -> None:
    replies = [(503, "{}"), (200, json.dumps({"status": "empty", "spec": None}))]

    async def spec(request: web.Request) -> web.Response:
        status, text = replies.pop(0)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/compute/api/v2/computes/{id}/spec", spec)
    runner = web.AppRunner(app)
    await runner.setup()
    port = pgserver.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    seen: list[str] = []
    try:
        await controlplane.fetch_config(
            uri=f"http://127.0.0.1:{port}", compute_id="c", token=None, record=seen.append
        )
    finally:
        await runner.cleanup()
    assert seen == ["503 Service Unavailable", "200 OK"]

    closed: list[str] = []
    with pytest.raises(errors.ConfigError):
        await controlplane.fetch_config(
            uri=f"http://127.0.0.1:{pgserver.free_port()}",
            compute_id="c",
            token=None,
            record=closed.append,
        )
    assert closed == ["unknown"] * controlplane.ATTEMPTS
