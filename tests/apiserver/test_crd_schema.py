"""The ComputeSpec CRD on a real API server: its schema is structural and enforced there."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from tests.apiserver import conftest
from tests.apiserver import resources as resources_

pytestmark = pytest.mark.apiserver


def test_crd_is_structural_and_established(admin: Any, crd: conftest.Crd) -> None:
    ext: Any = kubernetes.client.ApiextensionsV1Api(admin)
    stored = ext.read_custom_resource_definition(crd.document["metadata"]["name"])
    conditions = {c.type: c for c in stored.status.conditions}
    assert conditions["Established"].status == "True"
    assert conditions["NamesAccepted"].status == "True"
    # A non-structural schema is accepted by v1 only with this condition set: must be absent.
    assert "NonStructuralSchema" not in conditions
    assert stored.status.accepted_names.kind == crd.kind


def test_valid_resource_round_trips(resources: resources_.Resources) -> None:
    spec = resources_.minimal_spec(roles=("alice",), databases=("app",))
    created = resources.create("ok", spec)
    assert created["metadata"]["generation"] == 1
    stored = resources.compute_spec(resources.get("ok"))
    assert stored["cluster"]["roles"][0]["name"] == "alice"
    assert stored["cluster"]["databases"][0]["owner"] == "alice"
    assert stored["format_version"] == 1.0


def _rejection(resources: resources_.Resources, spec: dict[str, Any]) -> str:
    with pytest.raises(kubernetes.client.ApiException) as info:
        resources.create("bad", spec)
    assert info.value.status == 422, info.value.body
    assert not resources.exists("bad")
    return str(info.value.body)


def test_missing_required_field_rejected_by_server(resources: resources_.Resources) -> None:
    spec = resources_.minimal_spec()
    del spec["cluster"]
    assert f"{resources.FIELD}.cluster: Required value" in _rejection(resources, spec)


def test_missing_nested_required_field_rejected(resources: resources_.Resources) -> None:
    spec = resources_.minimal_spec(roles=("alice",), databases=("app",))
    del spec["cluster"]["databases"][0]["owner"]
    body = _rejection(resources, spec)
    assert f"{resources.FIELD}.cluster.databases[0].owner: Required value" in body


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("format_version",), "one", "format_version"),
        (("suspend_timeout_seconds",), "soon", "suspend_timeout_seconds"),
        (("cluster", "roles"), "alice", "cluster.roles"),
        (("cluster", "databases"), [{"name": 5, "owner": "x"}], "cluster.databases[0].name"),
    ],
)
def test_wrong_type_rejected_by_server(
    resources: resources_.Resources, path: tuple[str, ...], value: Any, field: str
) -> None:
    spec = resources_.minimal_spec()
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    body = _rejection(resources, spec)
    assert f"{resources.FIELD}.{field}: Invalid value" in body, body


def test_discovery_and_printer_columns(
    admin: Any, crd: conftest.Crd, resources: resources_.Resources
) -> None:
    """What `kubectl get cspec` relies on: the short name in discovery, and the printer
    columns' JSONPaths evaluated by the server (server-side printing)."""
    version = next(v for v in crd.document["spec"]["versions"] if v["name"] == crd.version)
    columns = [c["name"] for c in version.get("additionalPrinterColumns", [])]
    assert {"Status", "Ready", "Age"} <= set(columns)
    custom: Any = kubernetes.client.CustomObjectsApi(admin)
    listing = custom.get_api_resources(crd.group, crd.version)
    (entry,) = [r for r in listing.resources if r.name == crd.plural]
    assert entry.short_names == crd.document["spec"]["names"].get("shortNames")

    resources.create("c1")
    resources.patch_status(
        "c1",
        {
            "status": {
                "status": "running",
                "observedGeneration": 1,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Running",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        },
    )
    response = admin.call_api(
        "GET",
        f"{admin.configuration.host}/apis/{crd.group}/{crd.version}/namespaces/"
        f"{resources.namespace}/{crd.plural}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    response.read()
    table = json.loads(response.data)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", *columns]
    (row,) = table["rows"]
    cells = dict(zip(["Name", *columns], row["cells"], strict=True))
    assert cells["Name"] == "c1"
    if "Status" in cells:
        assert cells["Status"] == "running"
    if "Ready" in cells:
        assert cells["Ready"] == "True"
