"""Every shipped manifest and the Helm chart's rendered output pass a server-side dry-run apply.

A dry run goes through the real server's decoding, defaulting, schema validation and
admission, but stores nothing. The chart is rendered by real Helm (built by build.sh).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.apiserver import conftest, kube, toolchain
from tests.apiserver import resources as resources_

pytestmark = pytest.mark.apiserver


def _kustomize_base() -> list[Path]:
    kustomization = yaml.safe_load(conftest.manifest("kustomization.yaml").read_text())
    return [conftest.manifest(name) for name in kustomization["resources"]]


def _charts() -> list[Path]:
    return sorted(p.parent for p in (conftest.REPO / "charts").glob("*/Chart.yaml"))


def _dry_run(admin: Any, documents: list[dict[str, Any]], namespace: str) -> None:
    results = kube.server_side_apply(admin, documents, namespace=namespace, dry_run=True)
    assert [(r["kind"], r["metadata"]["name"]) for r in results] == [
        (d["kind"], d["metadata"]["name"]) for d in documents
    ]


def test_every_manifest_in_the_kustomize_base_passes_dry_run(
    admin: Any, crd: conftest.Crd, namespace: str
) -> None:
    files = _kustomize_base()
    documents = [doc for path in files for doc in kube.load_documents(path)]
    kinds = {d["kind"] for d in documents}
    assert {"Role", "RoleBinding", crd.kind} <= kinds
    assert "CustomResourceDefinition" not in kinds  # manifests/crd/, once per cluster
    _dry_run(admin, documents, namespace)
    # A dry run stores nothing.
    core: Any = kubernetes.client.CoreV1Api(admin)
    assert core.list_namespaced_service_account(namespace).items[0].metadata.name == "default"
    assert len(core.list_namespaced_service_account(namespace).items) == 1


def test_dry_run_rejects_an_invalid_manifest(admin: Any, namespace: str) -> None:
    """The control for the test above: a dry run does validate."""
    (statefulset,) = [
        d
        for d in kube.load_documents(conftest.manifest("statefulset.yaml"))
        if d["kind"] == "StatefulSet"
    ]
    statefulset["spec"]["replicas"] = -1
    with pytest.raises(kubernetes.client.ApiException) as info:
        kube.server_side_apply(admin, [statefulset], namespace=namespace, dry_run=True)
    assert info.value.status == 422, info.value.body
    assert "spec.replicas" in str(info.value.body)


def _helm(binaries: toolchain.Binaries, home: Path, *args: str) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run(
        [str(binaries.helm), *args], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# Values that switch on the chart's optional parts, so they are rendered and checked too.
_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {
        "computeSpec": resources_.minimal_spec(roles=("app",), databases=("app",)),
        "autoscaling": {"enabled": True},
        "pgdata": {"persistentSize": "1Gi"},
        "computeCtl": {"logFormat": "json"},
        "operator": {"logFormat": "json"},
    },
    "bring-your-own": {
        "keys": {"secretName": "my-keys"},
        "serviceAccount": {"create": False, "name": "my-account"},
        "rbac": {"create": False},
        "operator": {"enabled": False},
    },
}


def _values_files(chart: Path, directory: Path) -> dict[str, Path]:
    """Our variants, plus every ``ci/*values.yaml`` the chart ships (chart-testing's)."""
    files = {}
    for name, values in _VARIANTS.items():
        files[name] = directory / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(values))
    files.update({p.stem: p for p in sorted((chart / "ci").glob("*values.yaml"))})
    return files


@pytest.mark.parametrize("chart", _charts(), ids=lambda p: p.name)
def test_helm_chart_renders_and_passes_dry_run(
    admin: Any,
    binaries: toolchain.Binaries,
    crd: conftest.Crd,
    namespace: str,
    chart: Path,
    tmp_path: Path,
) -> None:
    _helm(binaries, tmp_path, "lint", "--strict", str(chart))
    for variant, values in _values_files(chart, tmp_path).items():
        rendered = _helm(
            binaries,
            tmp_path,
            "template",
            "test-release",
            str(chart),
            "--namespace",
            namespace,
            "--include-crds",
            "--values",
            str(values),
        )
        documents = [d for d in yaml.safe_load_all(rendered) if d]
        assert documents, f"{chart.name} rendered nothing with values {variant}"
        if variant == "everything-on":  # the optional objects are really there
            assert {crd.kind} <= {d["kind"] for d in documents}
        _dry_run(admin, documents, namespace)
