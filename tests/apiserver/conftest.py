"""Fixtures of the real-API tier: one etcd + kube-apiserver per session, the CRD, namespaces.

The binaries are built (or found in the cache) once, right after collection, so a cold
build never counts against a test's timeout; without Go every test here is skipped with
the one-line reason from ``toolchain``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import controlplane, kube, toolchain
from tests.apiserver import pod as pod_
from tests.apiserver import resources as resources_
from tests.support import toolchains

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_finish(session: pytest.Session) -> None:
    toolchains.build_after_collection(
        session, marker="apiserver", build=toolchain.binaries, tier="real-API tier"
    )


@pytest.fixture(scope="session")
def binaries() -> toolchain.Binaries:
    return toolchains.built_or_skip(toolchain.binaries, toolchain.Unavailable)


@pytest.fixture(scope="session")
def control_plane(binaries: toolchain.Binaries) -> Iterator[controlplane.ControlPlane]:
    plane = controlplane.ControlPlane.start(binaries)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin(control_plane: controlplane.ControlPlane) -> Iterator[Any]:
    """An ``ApiClient`` as a cluster admin (client certificate in system:masters)."""
    client = kube.api_client(control_plane.kubeconfig)
    try:
        yield client
    finally:
        client.close()


@dataclasses.dataclass(frozen=True)
class Crd:
    document: dict[str, Any]
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@pytest.fixture(scope="session")
def crd(admin: Any) -> Crd:
    """The ComputeSpec CRD, created and Established."""
    (document,) = kube.load_documents(manifest("crd/crd.yaml"))
    kube.server_side_apply(admin, [document], namespace=None, dry_run=False)
    kube.wait_crd_established(admin, document["metadata"]["name"])
    group, version, plural, kind = kube.crd_names(document)
    return Crd(document=document, group=group, version=version, plural=plural, kind=kind)


@pytest.fixture
def namespace(admin: Any) -> str:
    """A fresh namespace per test (nothing here can delete one: no namespace controller)."""
    return kube.create_namespace(admin)


@pytest.fixture
def resources(admin: Any, crd: Crd, namespace: str) -> resources_.Resources:
    """ComputeSpec CRUD in this test's namespace, as the admin."""
    return resources_.Resources(
        admin,
        group=crd.group,
        version=crd.version,
        plural=crd.plural,
        kind=crd.kind,
        namespace=namespace,
    )


def manifest(name: str) -> Path:
    """A file of the shipped kustomize base."""
    return REPO / "manifests" / name


@dataclasses.dataclass(frozen=True)
class Account:
    """A ServiceAccount's identity: a token kubeconfig and an ``ApiClient`` using it."""

    namespace: str
    name: str
    kubeconfig: Path
    client: Any


@pytest.fixture
def operator_account(
    admin: Any,
    crd: Crd,
    control_plane: controlplane.ControlPlane,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Account]:
    """The shipped RBAC (ServiceAccount, Role, RoleBinding) applied in this test's namespace,
    and the ServiceAccount's credentials from the TokenRequest API."""
    documents = kube.load_documents(manifest("rbac.yaml"))
    kube.server_side_apply(admin, documents, namespace=namespace, dry_run=False)
    (account,) = [d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"]
    token = kube.service_account_token(admin, namespace=namespace, name=account)
    kubeconfig = control_plane.write_kubeconfig(
        tmp_path / "operator.kubeconfig", user={"token": token}, namespace=namespace
    )
    client = kube.api_client(kubeconfig)
    try:
        yield Account(namespace=namespace, name=account, kubeconfig=kubeconfig, client=client)
    finally:
        client.close()


PodFactory = Callable[..., contextlib.AbstractContextManager[pod_.Pod]]


@pytest.fixture
def start_pod(
    admin: Any,
    control_plane: controlplane.ControlPlane,
    resources: resources_.Resources,
    operator_account: Account,
) -> PodFactory:
    """``pod_.running_pod`` bound to this test's cluster, namespace and the operator's
    shipped ServiceAccount; keyword arguments (``resync_interval``, ``spec``, ``key_file``,
    ``compute_env``...) pass through."""

    def start(**overrides: Any) -> contextlib.AbstractContextManager[pod_.Pod]:
        return pod_.running_pod(
            admin=admin,
            plane=control_plane,
            resources=resources,
            kubeconfig=operator_account.kubeconfig,
            account=f"system:serviceaccount:{operator_account.namespace}:{operator_account.name}",
            **overrides,
        )

    return start


@pytest.fixture
def pod(start_pod: PodFactory) -> Iterator[pod_.Pod]:
    """compute_ctl (real PostgreSQL) + its ComputeSpec + the operator as the shipped
    ServiceAccount; the operator's periodic reconcile runs every second."""
    with start_pod(resync_interval=1.0) as running:
        yield running
