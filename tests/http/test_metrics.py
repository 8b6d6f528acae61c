"""/metrics and /metrics.json: one compute_ctl_up series, startup and reconcile metrics."""

from __future__ import annotations

import pytest
from prometheus_client import parser

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import state as state_mod
from tests.http.conftest import Api
from tests.support import nodedouble

S = state_mod.ComputeStatus


async def _scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with api.session.get(f"{api.external}/metrics") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


async def test_compute_ctl_up_has_exactly_one_series(api: Api) -> None:
    assert (await _scrape(api))["compute_ctl_up"] == [
        ({"build_tag": "test-build", "status": "empty"}, 1.0)
    ]
    await api.node.start_running()
    body = {"spec": nodedouble.minimal_spec(), "compute_ctl_config": {}}
    async with api.session.post(f"{api.external}/configure", json=body) as r:
        assert r.status == 200
    assert len(api.node.state.transitions) >= 4
    assert (await _scrape(api))["compute_ctl_up"] == [
        ({"build_tag": "test-build", "status": "running"}, 1.0)
    ]
    async with api.session.post(f"{api.external}/terminate") as r:
        assert r.status == 200
    assert (await _scrape(api))["compute_ctl_up"] == [
        ({"build_tag": "test-build", "status": "terminated"}, 1.0)
    ]


async def test_startup_phases_are_observed_when_running(api: Api) -> None:
    state = api.node.state
    async with state.lock():
        state.set_status(S.INIT)
        state.timings.start_postgres_ms = 120
        state.timings.config_ms = 30
        state.timings.total_startup_ms = 170
        state.set_status(S.RUNNING)
    samples = await _scrape(api)
    counts = {
        labels["phase"]: value
        for labels, value in samples["compute_ctl_startup_phase_seconds_count"]
    }
    assert counts == {
        "init_to_running": 1.0,
        "start_postgres": 1.0,
        "config": 1.0,
        "total_startup": 1.0,
    }
    sums = {
        labels["phase"]: value for labels, value in samples["compute_ctl_startup_phase_seconds_sum"]
    }
    assert sums["start_postgres"] == pytest.approx(0.12)


async def test_metrics_json_is_the_startup_timings(api: Api) -> None:
    api.node.state.timings.basebackup_ms = 42
    async with api.session.get(f"{api.external}/metrics.json") as r:
        assert r.status == 200
        body = await r.json()
    assert body == api.node.state.timings.as_dict()
    assert body["basebackup_ms"] == 42
    assert "total_startup_ms" in body


def _value(m: metrics_mod.Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = m.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_reconcile_outcomes() -> None:
    m = metrics_mod.Metrics(build_tag="t", state=state_mod.ComputeState())
    with m.reconcile():
        pass
    with m.reconcile() as record:
        record.outcome = "noop"
    with pytest.raises(RuntimeError), m.reconcile():
        raise RuntimeError("apply failed")
    m.observe_reconcile(seconds=0.5, outcome="applied")
    assert _value(m, "compute_ctl_reconcile_total", {"outcome": "applied"}) == 2
    assert _value(m, "compute_ctl_reconcile_total", {"outcome": "noop"}) == 1
    assert _value(m, "compute_ctl_reconcile_total", {"outcome": "failed"}) == 1
    assert _value(m, "compute_ctl_reconcile_duration_seconds_count") == 4
    with pytest.raises(ValueError, match="unknown reconcile outcome"):
        m.observe_reconcile(seconds=1, outcome="maybe")


def test_registries_are_per_node() -> None:
    """No global registry: two computes in one process do not collide."""
    a = metrics_mod.Metrics(build_tag="a", state=state_mod.ComputeState())
    b = metrics_mod.Metrics(build_tag="b", state=state_mod.ComputeState())
    a.observe_reconcile(seconds=1, outcome="noop")
    assert _value(a, "compute_ctl_reconcile_total", {"outcome": "noop"}) == 1
    assert _value(b, "compute_ctl_reconcile_total", {"outcome": "noop"}) == 0
    assert _value(b, "compute_ctl_up", {"build_tag": "b", "status": "empty"}) == 1


def test_downtime_metrics() -> None:
    m = metrics_mod.Metrics(build_tag="t", state=state_mod.ComputeState())
    m.report_down(current_ms=500, increment_ms=500)
    m.report_down(current_ms=1000, increment_ms=500)
    assert _value(m, "compute_pg_current_downtime_ms") == 1000
    assert _value(m, "compute_pg_downtime_ms_total") == 1000
    m.report_up()
    assert _value(m, "compute_pg_current_downtime_ms") == 0
    assert _value(m, "compute_pg_downtime_ms_total") == 1000
