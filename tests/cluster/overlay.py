"""A kustomize overlay of ``manifests/`` for the one-node cluster, written per test.

The base listens on fixed ports on the pod network; this cluster's pods share the node's
network (``hostNetwork``) and must stay on loopback, so the overlay, made in the test's
temporary directory with free ports, changes only that: ``hostNetwork``, the ports of
compute_ctl, postgres and the operator's probe, binding 127.0.0.1, the loaded image, the
API server's loopback address for the operator (no kube-proxy here), small requests, and
``PGPORT`` in the compute_ctl container so the documented ``psql`` reaches the port.
Everything else (names, RBAC, the Service, the example ComputeSpec) is the base's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from tests.cluster.cluster import Cluster, Ports

__all__ = ["BASE", "write"]

BASE = Path(__file__).resolve().parents[2] / "manifests"


def _op(op: str, path: str, value: Any = None) -> dict[str, Any]:
    return {"op": op, "path": path} if value is None else {"op": op, "path": path, "value": value}


def write(
    cluster: Cluster,
    ports: Ports,
    directory: Path,
    *,
    compute_env: dict[str, str] | None = None,
) -> Path:
    """The overlay's directory (``kubectl apply -k`` it in place of ``manifests/``);
    ``compute_env``: more environment for compute_ctl (e.g. ``held.ENV``)."""
    api = urlparse(cluster.plane.url)
    repository, _, tag = cluster.tools.image.rpartition(":")
    pod = "/spec/template/spec"
    compute, operator = f"{pod}/containers/0", f"{pod}/containers/1"
    statefulset = [
        _op("add", f"{pod}/hostNetwork", True),
        _op("add", f"{pod}/dnsPolicy", "ClusterFirstWithHostNet"),
        _op(
            "replace",
            f"{compute}/args",
            [
                "--pgdata=/var/lib/postgresql/data/pgdata",
                f"--connstr=postgresql://cloud_admin@127.0.0.1:{ports.postgres}/postgres",
                "--compute-id=$(POD_NAME)",
                "--config=/etc/compute-ctl/config.json",
                f"--external-http-port={ports.http}",
                "--external-http-host=127.0.0.1",
                f"--internal-http-port={ports.internal}",
            ],
        ),
        *(
            _op("add", f"{compute}/env/-", {"name": k, "value": v})
            for k, v in {"PGPORT": str(ports.postgres), **(compute_env or {})}.items()
        ),
        _op("replace", f"{compute}/ports/0/containerPort", ports.postgres),
        _op("replace", f"{compute}/ports/1/containerPort", ports.http),
        _op("replace", f"{compute}/resources", {"requests": {"cpu": "10m", "memory": "64Mi"}}),
        _op("replace", f"{operator}/ports/0/containerPort", ports.operator_probe),
        _op("replace", f"{operator}/resources", {"requests": {"cpu": "10m", "memory": "32Mi"}}),
    ]
    operator_env = {
        "COMPUTE_CTL_URL": f"http://127.0.0.1:{ports.http}",
        "OPERATOR_LIVENESS": f"http://127.0.0.1:{ports.operator_probe}/healthz",
        "KUBERNETES_SERVICE_HOST": str(api.hostname),
        "KUBERNETES_SERVICE_PORT": str(api.port),
    }
    # A strategic merge for the env: entries merge by name (a JSON patch would append).
    env_patch = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "compute-1"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "env": [{"name": k, "value": v} for k, v in operator_env.items()],
                        }
                    ]
                }
            }
        },
    }
    # The example spec listens on every address at 5432: loopback and the test's port here.
    settings = "/spec/computeSpec/cluster/settings"
    computespec = [
        _op(
            "replace",
            f"{settings}/0",
            {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
        ),
        _op(
            "add",
            f"{settings}/-",
            {"name": "port", "value": str(ports.postgres), "vartype": "integer"},
        ),
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, directory)],  # kustomize: never absolute
        "images": [{"name": "compute-ctl", "newName": repository, "newTag": tag}],
        "patches": [
            {"target": {"kind": "StatefulSet"}, "patch": json.dumps(statefulset)},
            {"patch": json.dumps(env_patch)},
            {"target": {"kind": "ComputeSpec"}, "patch": json.dumps(computespec)},
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory
