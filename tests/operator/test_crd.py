"""The CRD is generated from the pydantic models, committed as generated, and structural."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from compute_ctl.compute import spec as spec_mod
from compute_ctl.operator import crd, status
from tests.operator import k8s_schema

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = [
    ROOT / "manifests" / "crd" / "crd.yaml",
    ROOT / "charts" / "compute-ctl" / "crds" / "computespecs.yaml",
]
REGENERATE = "python -m compute_ctl.operator.crd > manifests/crd/crd.yaml (and copy to the chart)"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crd_is_the_generated_one(path: Path) -> None:
    assert path.read_text() == crd.render(), f"{path} is stale: {REGENERATE}"


def test_schema_is_structural() -> None:
    assert k8s_schema.structural_problems(k8s_schema.crd_schema()) == []


def test_every_model_field_is_in_the_schema() -> None:
    schema = k8s_schema.crd_schema()
    compute_spec = schema["properties"]["spec"]["properties"]["computeSpec"]
    assert set(compute_spec["properties"]) == set(spec_mod.ComputeSpec.model_fields)
    required = {n for n, f in spec_mod.ComputeSpec.model_fields.items() if f.is_required()}
    assert set(compute_spec["required"]) == required
    status_fields = {f.alias or n for n, f in status.ResourceStatus.model_fields.items()}
    assert set(schema["properties"]["status"]["properties"]) == status_fields


def test_names_subresource_and_printer_columns() -> None:
    body = crd.build()
    assert body["metadata"]["name"] == "computespecs.compute.pgctl.dev"
    assert body["spec"]["scope"] == "Namespaced"
    assert body["spec"]["names"]["shortNames"] == ["cspec"]
    version = body["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["Status"] == ".status.status"
    assert paths["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert paths["Observed"] == ".status.observedGeneration"
    assert paths["Age"] == ".metadata.creationTimestamp"


def _example() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "manifests" / "computespec.yaml").read_text())
    example: dict[str, Any] = next(d for d in docs if d)
    return example


def test_example_resource_validates_in_the_schema_and_the_model() -> None:
    example = _example()
    assert list(k8s_schema.validator().iter_errors(example)) == []
    spec_mod.ComputeSpec.model_validate(example["spec"]["computeSpec"])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format_version",), "one"),
        (("suspend_timeout_seconds",), "soon"),
        (("cluster", "roles"), "app"),
        (("cluster", "databases", 0, "owner"), 7),
        (("cluster", "settings", 0, "vartype"), None),
        (("audit_log_level",), "Loud"),
    ],
)
def test_wrong_types_are_rejected_by_schema_and_model(path: tuple[Any, ...], value: Any) -> None:
    example = copy.deepcopy(_example())
    node = example["spec"]["computeSpec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(k8s_schema.validator().iter_errors(example)), f"schema accepted {path}={value!r}"
    with pytest.raises(ValueError, match="validation error"):
        spec_mod.ComputeSpec.model_validate(example["spec"]["computeSpec"])


@pytest.mark.parametrize("missing", ["cluster", "format_version", "suspend_timeout_seconds"])
def test_missing_required_fields_are_rejected(missing: str) -> None:
    example = copy.deepcopy(_example())
    del example["spec"]["computeSpec"][missing]
    errors = list(k8s_schema.validator().iter_errors(example))
    assert any(missing in e.message for e in errors)


def test_missing_compute_spec_is_rejected() -> None:
    example = copy.deepcopy(_example())
    example["spec"] = {}
    assert list(k8s_schema.validator().iter_errors(example))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "Replica"),
        ("mode", {"Static": "0/16B3748"}),
        ("features", ["activity_monitor_experimental", "something_new"]),
        ("remote_extensions", {"public_extensions": ["x"], "custom": {"a": 1}}),
    ],
)
def test_overridden_fields_accept_what_the_model_accepts(field: str, value: Any) -> None:
    example = copy.deepcopy(_example())
    example["spec"]["computeSpec"][field] = value
    assert list(k8s_schema.validator().iter_errors(example)) == []
    spec_mod.ComputeSpec.model_validate(example["spec"]["computeSpec"])


def test_setting_values_may_be_numbers_or_booleans() -> None:
    example = copy.deepcopy(_example())
    example["spec"]["computeSpec"]["cluster"]["settings"] = [
        {"name": "max_connections", "value": 50, "vartype": "integer"},
        {"name": "fsync", "value": True, "vartype": "bool"},
    ]
    assert list(k8s_schema.validator().iter_errors(example)) == []
    parsed = spec_mod.ComputeSpec.model_validate(example["spec"]["computeSpec"])
    assert [o.value for o in parsed.cluster.settings or []] == ["50", "on"]


def test_a_rendered_status_validates_against_the_status_schema() -> None:
    facts = status.Facts(
        generation=3,
        want="0123456789abcdef",
        observation=status.Observation(
            status="running",
            desired_spec_hash="0123456789abcdef",
            applied_spec_hash="0123456789abcdef",
            applied_generation=1,
            pending_restart=["shared_buffers"],
            last_active="2026-01-01T00:00:00Z",
        ),
        timings={"total_startup_ms": 812},
    )
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    rendered = status.render(old=status.ResourceStatus(), facts=facts, now=now)
    example = _example()
    example["status"] = rendered.wire()
    assert list(k8s_schema.validator().iter_errors(example)) == []
