"""A renamed compute (kustomize ``namePrefix``/``nameSuffix``) stays consistent (issue 13 defect 7).

The base's ``kustomizeconfig.yaml`` teaches kustomize that the Role's ``resourceNames``
name the ComputeSpec, so a rename reaches them; the keys Secret, given to the overlay as a
resource (docs/operator.md, "Deploying"), is renamed with the StatefulSet's references to
it by kustomize's own rules. Needs a real kustomize (``kubectl kustomize``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.operator import kustomize
from tests.operator.test_manifests import (
    BASE,
    ROOT,
    _by_kind,
    _one,
    check_consistency,
    check_least_privilege,
    validate_all,
)

NAME = "shop-compute-1-v2"


def _overlay(directory: Path) -> Path:
    """The documented overlay: prefix, suffix, the instance label, the keys Secret."""
    directory.mkdir()
    keys = subprocess.run(
        [str(ROOT / "scripts" / "compute-keys"), "compute-1"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    (directory / "keys.yaml").write_text(keys)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namePrefix": "shop-",
        "nameSuffix": "-v2",
        "resources": [os.path.relpath(BASE, directory), "keys.yaml"],
        "labels": [{"pairs": {"app.kubernetes.io/instance": NAME}, "includeSelectors": True}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def test_a_renamed_compute_keeps_its_role_secret_and_ids_in_step(tmp_path: Path) -> None:
    docs = kustomize.kubectl_kustomize(_overlay(tmp_path / "shop"))
    if docs is None:
        pytest.skip("kubectl is not installed: a rename needs the real kustomize")
    validate_all(docs)
    assert _one(docs, "ComputeSpec")["metadata"]["name"] == NAME
    sts = _one(docs, "StatefulSet")
    assert sts["metadata"]["name"] == NAME  # the pod NAME-0 derives both ids from it
    check_consistency(docs)
    # The Role's resourceNames are [NAME]; the credentials Secret keeps the base's name,
    # as the resource's spec.credentials does (docs/operator.md, "Deploying").
    check_least_privilege(docs, credentials="compute-1-credentials")
    secret = _one(docs, "Secret")["metadata"]["name"]
    assert secret == "shop-compute-1-keys-v2"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["jwks"]["secret"]["secretName"] == secret
    assert volumes["operator-key"]["secret"]["secretName"] == secret
    # A second compute in the namespace would not be selected by this one's Service.
    for service in _by_kind(docs, "Service"):
        assert service["spec"]["selector"]["app.kubernetes.io/instance"] == NAME
