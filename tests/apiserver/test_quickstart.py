"""docs/operator.md's quickstart, run command for command against the real API server.

The steps' shell blocks come from the document itself (``scripts/doc-commands``) and run
with kubectl as the admin. There is no kubelet here, so the pod the StatefulSet asks for
is emulated: compute_ctl and the operator run as processes with what a pod would get
(the keys Secret's two halves, the ServiceAccount's token, ``POD_NAME=compute-1-0``).
The one difference: the example spec listens on ``*`` for the pod network, the emulated
pod only on loopback. This shows the install works in one run on an empty namespace
(defect 3), the pod-name ids agree (defect 7), and the documented teardown finishes with
nothing left Terminating (defect 2). The connect step needs a pod (the cluster tier).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.apiserver import conftest, controlplane, kube, processes
from tests.apiserver import pod as pod_
from tests.apiserver import resources as resources_
from tests.support import docsteps

pytestmark = pytest.mark.apiserver

REPO = conftest.REPO
DOC = REPO / "docs" / "operator.md"
NAME = "compute-1"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the quickstart's commands need it")
    return path


def step(name: str, *, namespace: str, kubeconfig: Path, timeout: float = 100) -> str:
    """Run one step of the quickstart as documented; its output."""
    script = docsteps.script(DOC, name)
    env = {**os.environ, "NS": namespace, "KUBECONFIG": str(kubeconfig)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["sh", "-eu", "-c", script],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"quickstart step {name} failed:\n{script}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def kubectl_env(control_plane: controlplane.ControlPlane, admin: Any) -> Path:
    _kubectl()
    return control_plane.kubeconfig


def _emulated_pod(
    *,
    admin: Any,
    plane: controlplane.ControlPlane,
    crd: conftest.Crd,
    namespace: str,
    tmp_path: Path,
) -> pod_.Pod:
    core: Any = kubernetes.client.CoreV1Api(admin)
    secret = core.read_namespaced_secret(f"{NAME}-keys", namespace).data
    pod_name = f"{NAME}-0"
    compute = processes.Compute(compute_id=pod_name, secret=secret)
    token = kube.service_account_token(admin, namespace=namespace, name="compute-ctl-operator")
    kubeconfig = plane.write_kubeconfig(
        tmp_path / "operator.kubeconfig", user={"token": token}, namespace=namespace
    )
    resources = resources_.Resources(
        admin,
        group=crd.group,
        version=crd.version,
        plural=crd.plural,
        kind=crd.kind,
        namespace=namespace,
    )
    operator = processes.Operator(
        compute.workdir,
        name=NAME,
        namespace=namespace,
        kubeconfig=kubeconfig,
        compute_url=compute.url,
        key_file=compute.keys.private,
    )
    return pod_.Pod(
        name=NAME,
        compute=compute,
        operator=operator,
        resources=resources,
        admin=admin,
        plane=plane,
        account=f"system:serviceaccount:{namespace}:compute-ctl-operator",
    )


def test_the_quickstart_installs_changes_deletes_and_tears_down(
    admin: Any,
    control_plane: controlplane.ControlPlane,
    crd: conftest.Crd,
    kubectl_env: Path,
    tmp_path: Path,
) -> None:
    namespace = f"qs-{os.urandom(3).hex()}"
    step("install", namespace=namespace, kubeconfig=kubectl_env)
    core: Any = kubernetes.client.CoreV1Api(admin)
    # No controller-manager: the namespace's default ServiceAccount is made by hand.
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})

    pod = _emulated_pod(
        admin=admin, plane=control_plane, crd=crd, namespace=namespace, tmp_path=tmp_path
    )
    try:
        body = pod.get()
        spec = copy.deepcopy(body["spec"]["computeSpec"])
        for setting in spec["cluster"]["settings"]:
            if setting["name"] == "listen_addresses":
                setting["value"] = "127.0.0.1"
        pod.resources.patch_spec(NAME, spec)
        pod.compute.start()
        pod.wait(pod.compute.try_status, what="compute_ctl's API")
        pod.operator.start(resync_interval=30.0, pod_name=f"{NAME}-0")

        out = step("check", namespace=namespace, kubeconfig=kubectl_env)
        assert "compute-1" in out
        assert "running" in out
        step("change", namespace=namespace, kubeconfig=kubectl_env)
        assert ("reader",) in pod.catalog("SELECT rolname FROM pg_roles")

        step("delete", namespace=namespace, kubeconfig=kubectl_env)
        assert not pod.resources.exists(NAME)
        (event,) = pod.events("Terminated")
        assert "terminated" in event.message
        # Reported by the operator under its own name (defect 12), the pod's compute id.
        assert event.reporting_component == "compute-ctl-operator"
        assert event.source.component == "compute-ctl-operator"
        assert event.reporting_instance == f"{NAME}-0"
        assert pod.compute.try_status() in (None,) or pod.compute.status()["status"] == (
            "terminated"
        )
        step("teardown", namespace=namespace, kubeconfig=kubectl_env)
    finally:
        pod.operator.stop()
        pod.compute.stop()
        shutil.rmtree(pod.compute.workdir, ignore_errors=True)

    # Nothing of the compute is left, nothing is Terminating, the CRD is untouched.
    apps: Any = kubernetes.client.AppsV1Api(admin)
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(admin)
    assert pod.resources.list()["items"] == []
    assert apps.list_namespaced_stateful_set(namespace).items == []
    assert core.list_namespaced_service(namespace).items == []
    assert [s.metadata.name for s in core.list_namespaced_secret(namespace).items] == []
    assert rbac.list_namespaced_role(namespace).items == []
    ext: Any = kubernetes.client.ApiextensionsV1Api(admin)
    stored = ext.read_custom_resource_definition(crd.document["metadata"]["name"])
    assert stored.metadata.deletion_timestamp is None


def test_the_documented_crd_upgrade_path(
    admin: Any, crd: conftest.Crd, resources: resources_.Resources, kubectl_env: Path
) -> None:
    """An older stored CRD (here: without a field the new one has) is upgraded in place by
    the documented command, with a resource stored under it."""
    resources.create("keep-me")
    ext: Any = kubernetes.client.ApiextensionsV1Api(admin)
    name = crd.document["metadata"]["name"]
    older = copy.deepcopy(crd.document)
    version = older["spec"]["versions"][0]
    compute_spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "computeSpec"
    ]
    del compute_spec["properties"]["suspend_timeout_seconds"]
    compute_spec["required"].remove("suspend_timeout_seconds")
    kube.server_side_apply(admin, [older], namespace=None, dry_run=False)
    try:
        stored = ext.read_custom_resource_definition(name).to_dict()
        props = stored["spec"]["versions"][0]["schema"]["open_apiv3_schema"]["properties"]
        assert (
            "suspend_timeout_seconds"
            not in props["spec"]["properties"]["computeSpec"]["properties"]
        )
        command = "kubectl apply --server-side --force-conflicts -k manifests/crd/"
        assert command in DOC.read_text()
        env = {**os.environ, "KUBECONFIG": str(kubectl_env)}
        subprocess.run(command.split(), cwd=REPO, env=env, check=True, timeout=60)
    finally:
        kube.server_side_apply(admin, [crd.document], namespace=None, dry_run=False)
    stored = ext.read_custom_resource_definition(name).to_dict()
    props = stored["spec"]["versions"][0]["schema"]["open_apiv3_schema"]["properties"]
    assert "suspend_timeout_seconds" in props["spec"]["properties"]["computeSpec"]["properties"]
    assert resources.exists("keep-me")
