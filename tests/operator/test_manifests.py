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


def expected_rules(
    name: str, secrets: Iterable[str] = (), credentials: str | None = None
) -> list[dict[str, Any]]:
    """Pinned to the compute's own resource; only the verbs kopf uses (defect 6); ``get``
    of the Secrets its credentials reference: ``credentials`` (by default
    ``<name>-credentials``) and ``secrets``."""
    return [
        {
            "apiGroups": [resource.GROUP],
            "resources": [resource.PLURAL],
            "resourceNames": [name],
            "verbs": ["list", "watch", "patch"],
        },
        {
            "apiGroups": [resource.GROUP],
            "resources": [f"{resource.PLURAL}/status"],
            "resourceNames": [name],
            "verbs": ["patch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": list(dict.fromkeys([credentials or f"{name}-credentials", *secrets])),
            "verbs": ["get"],
        },
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


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def resource_name(docs: list[dict[str, Any]]) -> str:
    """The ComputeSpec the operator watches, as the pod is told (explicitly or by POD_NAME)."""
    sts = _one(docs, "StatefulSet")
    operator = next(
        c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    )
    env = _env(operator)
    if "COMPUTE_SPEC_NAME" in env:
        name: str = env["COMPUTE_SPEC_NAME"]["value"]
        return name
    # The kustomize base: the pod's own name, without the ordinal, is its StatefulSet's.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    sts_name: str = sts["metadata"]["name"]
    return sts_name


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
    env = _env(operator)
    # The operator calls the external API (JWT), never the internal port.
    assert env["COMPUTE_CTL_URL"]["value"] == f"http://127.0.0.1:{ports['http']}"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert operator["command"] == ["compute-ctl-operator"]
    assert compute.get("command") is None  # the image's entrypoint: compute_ctl

    # One compute id on both sides: compute_ctl's --compute-id and the operator's token.
    compute_id = next(a for a in compute["args"] if a.startswith("--compute-id="))
    if env["COMPUTE_ID"].get("value") == "$(POD_NAME)":
        assert compute_id == "--compute-id=$(POD_NAME)"
        assert _env(compute)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    else:
        assert compute_id == f"--compute-id={env['COMPUTE_ID']['value']}"
    # The operator watches the ComputeSpec these manifests create, if any.
    specs = _by_kind(docs, resource.KIND)
    if specs:
        assert resource_name(docs) == specs[0]["metadata"]["name"]

    # The pod runs as the bound ServiceAccount; the Service selects the pod.
    account = _one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    binding = _one(docs, "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == [account]
    assert binding["roleRef"]["name"] == _one(docs, "Role")["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _by_kind(docs, "Service")}
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert targets <= set(ports), "the Service targets a port the pod does not name"
    # serviceName names a headless Service (defect 8).
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True

    # Only the operator container has a Kubernetes identity and the private key (defect 6,
    # security 1); compute_ctl mounts only the JWKS half of the keys Secret.
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {
        name: {m["name"] for m in c.get("volumeMounts", [])} for name, c in containers.items()
    }
    token = volumes["operator-token"]["projected"]["sources"]
    assert any("serviceAccountToken" in source for source in token)
    assert "operator-token" in mounts["operator"]
    assert "operator-token" not in mounts["compute-ctl"]
    config_arg = next(a for a in compute["args"] if a.startswith("--config="))
    mount = next(m for m in compute["volumeMounts"] if m["name"] == "jwks")
    assert config_arg == f"--config={mount['mountPath']}/config.json"
    assert volumes["jwks"]["secret"]["items"] == [{"key": "config.json", "path": "config.json"}]
    assert volumes["operator-key"]["secret"]["items"] == [
        {"key": "operator.pem", "path": "operator.pem"}
    ]
    assert (
        volumes["jwks"]["secret"]["secretName"] == volumes["operator-key"]["secret"]["secretName"]
    )
    assert mounts["compute-ctl"] & {"operator-key", "operator-token"} == set()
    key_mount = next(m for m in operator["volumeMounts"] if m["name"] == "operator-key")
    assert env["OPERATOR_KEY_FILE"]["value"] == f"{key_mount['mountPath']}/operator.pem"


def check_least_privilege(
    docs: list[dict[str, Any]], secrets: Iterable[str] = (), credentials: str | None = None
) -> None:
    assert _by_kind(docs, "ClusterRole") == []
    assert _by_kind(docs, "ClusterRoleBinding") == []
    rules = expected_rules(resource_name(docs), secrets, credentials)
    assert _one(docs, "Role")["rules"] == rules


# --- the kustomize base ---------------------------------------------------------------


def test_kustomize_base_renders_valid_objects() -> None:
    docs = kustomize.render(BASE)
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ServiceAccount", "Role", "RoleBinding", resource.KIND, "Service", "StatefulSet"]
    )
    validate_all(docs)
    # The CRD is its own base, installed once per cluster before any compute (defect 3).
    (crd,) = kustomize.render(BASE / "crd")
    assert crd["kind"] == "CustomResourceDefinition"


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
    """The release's objects; its hooks are checked apart (test_teardown_hook.py)."""
    return [d for d in render_chart(*flags) if not is_hook(d)]


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def render_chart(*flags: str) -> list[dict[str, Any]]:
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
    for key in ("image", "resources", "ports", "keys", "autoscaling", "metrics"):
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
    sts = _one(docs, "StatefulSet")
    compute = sts["spec"]["template"]["spec"]["containers"][0]
    # The image the docs build (defect 5), and an emptyDir PGDATA wiped at each start.
    assert compute["image"] == "compute-ctl:latest"
    assert "--keep-pgdata" not in compute["args"]
    assert _by_kind(docs, "PodMonitor") == []


def test_chart_full_render_is_valid() -> None:
    example = yaml.safe_load((BASE / "computespec.yaml").read_text())
    docs = _template(
        "--set=autoscaling.enabled=true",
        "--set=pgdata.persistentSize=10Gi",
        "--set=image.tag=v9",
        "--set=resources.computeCtl.limits.cpu=2",
        "--set=metrics.podMonitor.enabled=true",
        "--set-json=computeSpec=" + json.dumps(example["spec"]["computeSpec"]),
    )
    validate_all([d for d in docs if d["kind"] != "PodMonitor"])
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
    # A persistent volume is kept across restarts (defect 4).
    assert "--keep-pgdata" in compute["args"]
    monitor = _one(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert "checksum/keys" in annotations


def test_chart_credentials_reach_the_resource_and_pin_the_role() -> None:
    def ref(name: str, key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": name, "key": key}}

    credentials = {
        "roles": [{"name": "app", "passwordFrom": ref("app-pw", "password")}],
        "storageAuthTokenFrom": ref("tokens", "storage"),
        "endpointStorageTokenFrom": ref("tokens", "endpoint"),
    }
    example = yaml.safe_load((BASE / "computespec.yaml").read_text())
    docs = _template(
        "--set-json=computeSpec=" + json.dumps(example["spec"]["computeSpec"]),
        "--set-json=credentials=" + json.dumps(credentials),
        "--set-json=rbac.secretNames=" + json.dumps(["extra", "tokens"]),
        "--set=operator.secretInterval=3",
    )
    validate_all(docs)
    check_least_privilege(docs, secrets=["app-pw", "tokens", "extra"])
    assert _one(docs, resource.KIND)["spec"]["credentials"] == credentials
    sts = _one(docs, "StatefulSet")
    operator = sts["spec"]["template"]["spec"]["containers"][1]
    assert "--secret-interval=3" in operator["args"]


def test_chart_uses_a_named_keys_secret() -> None:
    docs = _template("--set=keys.secretName=my-keys")
    assert _by_kind(docs, "Secret") == []  # made by scripts/compute-keys, never by the chart
    sts = _one(docs, "StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["jwks"]["secret"]["secretName"] == "my-keys"
    assert volumes["operator-key"]["secret"]["secretName"] == "my-keys"


def test_chart_values_schema_refuses_unknown_and_mistyped_values() -> None:
    for bad in ("--set=bogus=1", "--set=ports.http=x", "--set=operator.logFormat=xml"):
        proc = subprocess.run(
            [_helm(), "template", "c1", str(CHART), *bad.split()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr, proc.stderr


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert f"`{key}" in readme, key
