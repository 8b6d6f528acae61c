"""One compute installed on the test cluster with the Helm chart: its values, spec and ports.

Owns what a scenario needs to install, change and reach one compute pod: the chart values
for this cluster (the locally loaded image, ``hostNetwork`` with free loopback ports, the
API server's loopback address for the operator since there is no kube-proxy), the Neon
spec it carries, and a psycopg connection to its postgres. Asserts nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from tests import pgserver
from tests.cluster.cluster import Cluster, Namespace, Ports

__all__ = ["INSTALL_BOUND", "TEARDOWN_BOUND", "Compute", "cluster_values", "installed", "spec"]

CHART = Path(__file__).resolve().parents[2] / "charts" / "compute-ctl"
PGDATA = "/var/lib/postgresql/data/pgdata"  # the chart's --pgdata: also the socket directory


def spec(
    ports: Ports,
    *,
    roles: tuple[str, ...] = (),
    databases: tuple[str, ...] = (),
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A local-mode Neon spec whose postgres listens on loopback at ``ports.postgres``."""
    all_settings = {
        "port": str(ports.postgres),
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "shared_buffers": "32MB",
        **(settings or {}),
    }
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "roles": [{"name": r, "encrypted_password": None, "options": None} for r in roles],
            "databases": [
                {"name": d, "owner": roles[0] if roles else "cloud_admin"} for d in databases
            ],
            "settings": [
                {"name": k, "value": v, "vartype": "integer" if v.isdigit() else "string"}
                for k, v in all_settings.items()
            ],
        },
    }


@dataclasses.dataclass
class Compute:
    """A Helm release of the chart in ``ns``: one StatefulSet pod and its ComputeSpec."""

    ns: Namespace
    release: str
    ports: Ports = dataclasses.field(default_factory=Ports.free)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The ComputeSpec's (and the StatefulSet's) name: the release's full name."""
        return self.release if "compute-ctl" in self.release else f"{self.release}-compute-ctl"

    @property
    def pod(self) -> str:
        return f"{self.name}-0"

    def values(self, computespec: dict[str, Any] | None) -> dict[str, Any]:
        values = cluster_values(self.ns.cluster, self.ports)
        values["computeSpec"] = computespec
        return _merge(values, self.extra)

    def _values_file(self, computespec: dict[str, Any] | None) -> Path:
        path = self.ns.tmp_path / f"{self.release}-values.yaml"
        path.write_text(yaml.safe_dump(self.values(computespec)))
        return path

    def install(self, computespec: dict[str, Any] | None, *args: str) -> str:
        self.ns.make_keys(self.name)
        return self.ns.helm(
            "install", self.release, str(CHART), "-f", str(self._values_file(computespec)), *args
        )

    def upgrade(self, computespec: dict[str, Any] | None, *args: str) -> str:
        return self.ns.helm(
            "upgrade", self.release, str(CHART), "-f", str(self._values_file(computespec)), *args
        )

    def apply_spec(self, computespec: dict[str, Any]) -> None:
        """``kubectl apply`` of the ComputeSpec with a changed ``spec.computeSpec``."""
        obj = self.ns.cspec(self.name)
        body = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": self.name, "labels": obj["metadata"].get("labels", {})},
            "spec": {"computeSpec": computespec},
        }
        path = self.ns.tmp_path / f"{self.name}-cspec.json"
        path.write_text(json.dumps(body))
        self.ns.kubectl("apply", "-f", str(path))

    def generation(self) -> int:
        generation: int = self.ns.cspec(self.name)["metadata"]["generation"]
        return generation

    def query(self, sql: str, dbname: str = "postgres") -> list[tuple[str, ...]]:
        """Rows of ``sql`` as the superuser, over the pod's private unix socket (the only
        place pg_hba.conf trusts it): ``kubectl exec`` of psql in the compute_ctl container."""
        out = self.ns.exec(
            self.pod,
            "compute-ctl",
            "psql",
            "-h",
            PGDATA,
            "-p",
            str(self.ports.postgres),
            "-U",
            pgserver.SUPERUSER,
            "-d",
            dbname,
            "-AtXq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )
        return [tuple(line.split("|")) for line in out.splitlines() if line]


INSTALL_BOUND = 120.0  # helm install to Ready=True here: pod start, initdb, the first push
# A teardown (the resource deleted to gone), a compute still starting included: its start,
# the fast shutdown, the finalizer released. kopf's default 60 s wait for a busy timer
# to stop (operator/handlers.py) once made it 80 s.
TEARDOWN_BOUND = 50.0


def installed(kube: Namespace, release: str, **extra: Any) -> Compute:
    """A compute installed with the chart (role and database ``app``), Ready=True."""
    compute = Compute(kube, release, extra=dict(extra))
    compute.install(spec(compute.ports, roles=("app",), databases=("app",)))
    try:
        kube.wait_pod_ready(compute.pod, timeout=INSTALL_BOUND)
        kube.wait_ready(compute.name, generation=1, timeout=INSTALL_BOUND)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics()}") from e
    return compute


def cluster_values(cluster: Cluster, ports: Ports) -> dict[str, Any]:
    """Chart values for a pod on the test cluster: the loaded image, hostNetwork on free
    loopback ports, small requests, and the API server's loopback address for the
    operator (no kube-proxy here to route the ``kubernetes`` Service's ClusterIP)."""
    repository, _, tag = cluster.tools.image.rpartition(":")
    api = urlparse(cluster.plane.url)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": True,
        "ports": {
            "postgres": ports.postgres,
            "http": ports.http,
            "internal": ports.internal,
            "operatorProbe": ports.operator_probe,
        },
        "resources": {
            "computeCtl": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            "operator": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        },
        "operator": {
            "resyncInterval": 30,
            "logLevel": "DEBUG",
            "extraEnv": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": api.hostname},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(api.port)},
            ],
        },
        "shmSize": "64Mi",
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
