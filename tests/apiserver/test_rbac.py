"""The shipped Role, enforced by a real RBAC authorizer.

The operator's ServiceAccount (manifests/rbac.yaml) can do what kopf and the reconciler do
with its one resource (``compute-1``, pinned by resourceNames) and ``get`` the one Secret
its ``spec.credentials`` references, and nothing else: not even read another ComputeSpec
or Secret in its namespace. The end-to-end tests run the operator with this
identity, which shows the Role is sufficient; these show it is no broader than that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from tests.apiserver import conftest, kube
from tests.apiserver import resources as resources_

pytestmark = pytest.mark.apiserver


def _as(account: conftest.Account, crd: conftest.Crd) -> resources_.Resources:
    return resources_.Resources(
        account.client,
        group=crd.group,
        version=crd.version,
        plural=crd.plural,
        kind=crd.kind,
        namespace=account.namespace,
    )


def test_role_allows_what_the_operator_does(
    operator_account: conftest.Account,
    crd: conftest.Crd,
    resources: resources_.Resources,
    secrets: None,
) -> None:
    resources.create("compute-1")
    mine = _as(operator_account, crd)
    listing = mine.list(field_selector="metadata.name=compute-1")
    assert [o["metadata"]["name"] for o in listing["items"]] == ["compute-1"]
    # kopf: finalizers and its annotations on the object, then status via the subresource.
    mine.patch(
        "compute-1",
        {
            "metadata": {
                "finalizers": [f"{crd.group}/terminate"],
                "annotations": {f"{crd.group}/last-handled-spec": "{}"},
            }
        },
    )
    assert mine.patch_status("compute-1", {"status": {"observedGeneration": 1}})["status"] == {
        "observedGeneration": 1
    }
    core: Any = kubernetes.client.CoreV1Api(operator_account.client)
    core.create_namespaced_event(
        operator_account.namespace,
        {
            "metadata": {"generateName": "compute-1-"},
            "involvedObject": {
                "apiVersion": crd.api_version,
                "kind": crd.kind,
                "name": "compute-1",
                "namespace": operator_account.namespace,
            },
            "reason": "Test",
            "message": "allowed",
            "type": "Normal",
            "source": {"component": "compute-ctl-operator"},
        },
    )
    # The Secret spec.credentials references, by its name: get only.
    core.read_namespaced_secret("compute-1-credentials", operator_account.namespace)


@pytest.fixture
def secrets(admin: Any, operator_account: conftest.Account) -> None:
    core: Any = kubernetes.client.CoreV1Api(admin)
    for name in ("compute-1-credentials", "unrelated"):
        body = {"metadata": {"name": name}, "stringData": {"k": "v"}}
        core.create_namespaced_secret(operator_account.namespace, body)


def _denied(call: Callable[[], object]) -> None:
    with pytest.raises(kubernetes.client.ApiException) as info:
        call()
    assert info.value.status == 403, info.value.body


def test_role_denies_everything_else(
    admin: Any,
    operator_account: conftest.Account,
    crd: conftest.Crd,
    resources: resources_.Resources,
    secrets: None,
) -> None:
    resources.create("compute-1")
    mine = _as(operator_account, crd)
    core: Any = kubernetes.client.CoreV1Api(operator_account.client)
    custom: Any = kubernetes.client.CustomObjectsApi(operator_account.client)
    ext: Any = kubernetes.client.ApiextensionsV1Api(operator_account.client)
    elsewhere = kube.create_namespace(admin)

    resources.create("compute-2")
    _denied(lambda: mine.create("c3"))
    _denied(lambda: mine.delete("compute-1"))
    _denied(lambda: mine.get("compute-1"))  # kopf never gets: it lists and watches
    _denied(lambda: mine.replace("compute-1", resources.get("compute-1")))
    # Pinned by resourceNames: no list without the field selector, no other resource.
    _denied(lambda: mine.list())
    _denied(lambda: mine.list(field_selector="metadata.name=compute-2"))
    _denied(lambda: mine.patch("compute-2", {"metadata": {"annotations": {"a": "b"}}}))
    _denied(lambda: mine.patch_status("compute-2", {"status": {"observedGeneration": 1}}))
    # No reach beyond its namespace, and no cluster scanning.
    _denied(
        lambda: custom.list_namespaced_custom_object(crd.group, crd.version, elsewhere, crd.plural)
    )
    _denied(lambda: custom.list_cluster_custom_object(crd.group, crd.version, crd.plural))
    _denied(lambda: core.list_namespace())
    _denied(lambda: ext.list_custom_resource_definition())
    # Secrets: only `get` of the one it references; no other Secret, no list or watch
    # (not even narrowed by a field selector), no writes.
    ns = operator_account.namespace
    _denied(lambda: core.read_namespaced_secret("unrelated", ns))
    _denied(lambda: core.list_namespaced_secret(ns))
    _denied(
        lambda: core.list_namespaced_secret(
            ns, field_selector="metadata.name=compute-1-credentials"
        )
    )
    _denied(
        lambda: core.list_namespaced_secret(
            ns, field_selector="metadata.name=compute-1-credentials", watch=True
        )
    )
    _denied(lambda: core.patch_namespaced_secret("compute-1-credentials", ns, {"data": {}}))
    _denied(lambda: core.delete_namespaced_secret("compute-1-credentials", ns))
    _denied(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "mine"}}))
    # Nothing else in its own namespace: no pods, events to read or its own RBAC.
    _denied(lambda: core.list_namespaced_pod(operator_account.namespace))
    _denied(lambda: core.list_namespaced_event(operator_account.namespace))
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(operator_account.client)
    _denied(lambda: rbac.list_namespaced_role(operator_account.namespace))
    assert resources.exists("compute-1")
