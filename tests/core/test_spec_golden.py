"""The wire models parse a spec that uses every field and serialise it back unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from compute_ctl.compute import spec

DATA = Path(__file__).parent.parent / "data"


def _golden() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((DATA / "compute_config_full.json").read_text())
    return raw


def test_golden_uses_every_field() -> None:
    raw = _golden()
    assert set(raw["spec"]) == set(spec.ComputeSpec.model_fields)
    assert set(raw["spec"]["cluster"]) == set(spec.Cluster.model_fields)
    assert set(raw["compute_ctl_config"]) == set(spec.ComputeCtlConfig.model_fields)


def test_golden_round_trips() -> None:
    raw = _golden()
    config = spec.ComputeConfig.model_validate(raw)
    assert config.model_dump(mode="json") == raw
    again = spec.ComputeConfig.model_validate_json(config.model_dump_json())
    assert again == config
    assert spec.spec_hash(again.spec) == spec.spec_hash(config.spec)


def test_golden_values() -> None:
    config = spec.ComputeConfig.model_validate(_golden())
    assert config.spec is not None
    s = config.spec
    assert s.mode.kind == "Static"
    assert s.mode.lsn == "0/169AD58"
    assert s.port() == 55432
    assert s.has_neon_storage()
    assert s.audit_log_level is spec.AuditLogLevel.HIPAA
    assert s.cluster.roles[1].options is not None
    assert s.cluster.roles[1].options[1].value is None


def test_minimal_spec_gets_neon_defaults() -> None:
    minimal = {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {"roles": [], "databases": []},
    }
    s = spec.ComputeSpec.model_validate(minimal)
    assert s.mode.kind == "Primary"
    assert s.reconfigure_concurrency == 1
    assert s.safekeeper_connstrings == []
    assert s.skip_pg_catalog_updates is False
    assert not s.has_neon_storage()


def test_unknown_fields_and_features_are_tolerated() -> None:
    raw = _golden()
    raw["spec"]["some_future_field"] = {"x": 1}
    raw["spec"]["features"] = ["activity_monitor_experimental", "brand_new_feature"]
    s = spec.ComputeConfig.model_validate(raw).spec
    assert s is not None
    assert s.features[1] is spec.ComputeFeature.UNKNOWN_FEATURE


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.pop("cluster"), "spec.cluster"),
        (lambda s: s.pop("suspend_timeout_seconds"), "spec.suspend_timeout_seconds"),
        (lambda s: s["cluster"]["roles"][0].pop("name"), "spec.cluster.roles.0.name"),
        (lambda s: s.update(tenant_id="XYZ"), "spec.tenant_id"),
        (lambda s: s.update(mode={"Static": "nope"}), "spec.mode"),
    ],
)
def test_validation_errors_name_the_field(mutate: Any, field: str) -> None:
    raw = _golden()
    mutate(raw["spec"])
    with pytest.raises(pydantic.ValidationError) as caught:
        spec.ComputeConfig.model_validate(raw)
    assert spec.format_validation_error(caught.value).startswith(field)
