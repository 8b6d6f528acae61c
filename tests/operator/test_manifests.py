"""The kustomize base and the Helm chart render to valid, consistent, least-privilege objects."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from compute_ctl.compute import spec as spec_mod
from compute_ctl.operator import resource
from tests.operator import k8s_schema, kustomize

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests"
CHART = ROOT / "charts" / "compute-ctl"
K8S_VERSION = "1.30.0"  # the apiserver tier's version

EXPECTED_RULES = [
    {
        "apiGroups": [resource.GROUP],
        "resources": [resource.PLURAL],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [resource.GROUP],
        "resources": [f"{resource.PLURAL}/status"],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]


def _by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def validate_all(docs: list[dict[str, Any]]) -> None:
    """kubernetes-validate for built-in kinds; the generated CRD schema for ComputeSpecs."""
    for doc in docs:
        if doc["kind"] == resource.KIND:
            errors = [e.message for e in k8s_schema.validator().iter_errors(doc)]
            assert errors == [], f"{doc['metadata']['name']}: {errors}"
            spec_mod.ComputeSpec.model_validate(doc["spec"]["computeSpec"])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def check_consistency(docs: list[dict[str, Any]]) -> None:
    """Names and ports that must agree across objects."""
    sts = _one(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"compute-ctl", "operator"}
    compute, operator = containers["compute-ctl"], containers["operator"]

    # Probes: liveness and readiness on the external port's open endpoints.
    ports = {p["name"]: p["containerPort"] for p in compute["ports"]}
    assert compute["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert compute["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert f"--external-http-port={ports['http']}" in compute["args"]
    internal = next(a for a in compute["args"] if a.startswith("--internal-http-port="))
    env = {e["name"]: e for e in operator["env"]}
    assert env["COMPUTE_CTL_URL"]["value"] == f"http://127.0.0.1:{internal.split('=')[1]}"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert operator["command"] == ["compute-ctl-operator"]
    assert compute.get("command") is None  # the image's entrypoint: compute_ctl

    # The operator watches the ComputeSpec these manifests create, if any.
    specs = _by_kind(docs, resource.KIND)
    if specs:
        assert env["COMPUTE_SPEC_NAME"]["value"] == specs[0]["metadata"]["name"]
        compute_id = next(a for a in compute["args"] if a.startswith("--compute-id="))
        assert compute_id == f"--compute-id={specs[0]['metadata']['name']}"

    # The pod runs as the bound ServiceAccount; the Service selects the pod.
    account = _one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    binding = _one(docs, "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == [account]
    assert binding["roleRef"]["name"] == _one(docs, "Role")["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = _one(docs, "Service")["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service_ports = {p["targetPort"] for p in _one(docs, "Service")["spec"]["ports"]}
    assert service_ports <= set(ports), "the Service targets a port the pod does not name"
    assert pod["securityContext"]["runAsNonRoot"] is True

    # compute_ctl's --config is a spec-less config from the mounted Secret.
    config_arg = next(a for a in compute["args"] if a.startswith("--config="))
    mount = next(m for m in compute["volumeMounts"] if m["name"] == "config")
    assert config_arg == f"--config={mount['mountPath']}/config.json"
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    secret = _one(docs, "Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    config = spec_mod.ComputeConfig.model_validate_json(secret["stringData"]["config.json"])
    assert config.spec is None


def check_least_privilege(docs: list[dict[str, Any]]) -> None:
    assert _by_kind(docs, "ClusterRole") == []
    assert _by_kind(docs, "ClusterRoleBinding") == []
    assert _one(docs, "Role")["rules"] == EXPECTED_RULES


# --- the kustomize base ---------------------------------------------------------------


def test_kustomize_base_renders_valid_objects() -> None:
    docs = kustomize.render(BASE)
    assert sorted(d["kind"] for d in docs) == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            resource.KIND,
            "Secret",
            "Service",
            "StatefulSet",
        ]
    )
    validate_all(docs)


def test_kustomize_base_is_consistent_and_least_privilege() -> None:
    docs = kustomize.render(BASE)
    check_consistency(docs)
    check_least_privilege(docs)


def test_our_renderer_agrees_with_kubectl_kustomize() -> None:
    real = kustomize.kubectl_kustomize(BASE)
    if real is None:
        pytest.skip("kubectl is not installed; the Python renderer stands alone")

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return (doc["kind"], doc["metadata"]["name"])

    assert sorted(real, key=key) == sorted(kustomize.render(BASE), key=key)


def test_renderer_refuses_unsupported_kustomizations(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n"
    )
    with pytest.raises(kustomize.UnsupportedKustomization, match="namePrefix"):
        kustomize.render(tmp_path)


def test_validation_catches_a_broken_object() -> None:
    docs = kustomize.render(BASE)
    sts = _one(docs, "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5432"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_all([sts])


# --- the Helm chart -------------------------------------------------------------------


def _helm() -> str:
    """Real Helm: on PATH, $HELM, or the apiserver tier's build cache (go install)."""
    candidates = [os.environ.get("HELM"), shutil.which("helm")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.cache/compute-ctl/helm/*/helm")))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("helm is not installed (the apiserver tier builds it with go install)")


def _template(*flags: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [_helm(), "template", "c1", str(CHART), "--namespace", "ns1", *flags],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def test_chart_values_parse_and_crd_is_bundled() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("image", "resources", "ports", "jwks", "autoscaling"):
        assert key in values
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "compute-ctl"


def test_chart_lints() -> None:
    subprocess.run([_helm(), "lint", str(CHART)], check=True, capture_output=True, timeout=60)


def test_chart_default_render_is_valid() -> None:
    docs = _template()
    assert _by_kind(docs, resource.KIND) == []  # no computeSpec value: no resource
    validate_all(docs)
    check_consistency(docs)
    check_least_privilege(docs)


def test_chart_full_render_is_valid() -> None:
    example = yaml.safe_load((BASE / "computespec.yaml").read_text())
    docs = _template(
        "--set=autoscaling.enabled=true",
        "--set=pgdata.persistentSize=10Gi",
        "--set=image.tag=v9",
        "--set=resources.computeCtl.limits.cpu=2",
        "--set=jwks.keys[0].kty=OKP",
        "--set=jwks.keys[0].crv=Ed25519",
        "--set=jwks.keys[0].x=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "--set-json=computeSpec=" + json.dumps(example["spec"]["computeSpec"]),
    )
    validate_all(docs)
    check_consistency(docs)
    check_least_privilege(docs)
    sts = _one(docs, "StatefulSet")
    compute = sts["spec"]["template"]["spec"]["containers"][0]
    assert compute["image"] == "compute-ctl:v9"
    assert compute["resources"]["limits"]["cpu"] == 2
    assert {"name": "AUTOSCALING", "value": "true"} in compute["env"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "10Gi"
    }
    secret = _one(docs, "Secret")
    config = spec_mod.ComputeConfig.model_validate_json(secret["stringData"]["config.json"])
    assert config.compute_ctl_config.jwks.keys[0]["crv"] == "Ed25519"


def test_chart_uses_an_existing_jwks_secret() -> None:
    docs = _template("--set=jwks.existingSecret=my-keys")
    assert _by_kind(docs, "Secret") == []
    sts = _one(docs, "StatefulSet")
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert volume["secret"]["secretName"] == "my-keys"
