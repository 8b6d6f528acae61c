"""docs/quickstart.md, run block by block on the one-node cluster: the page cannot go stale.

It runs last (file order): the page's teardown deletes the CRD, and with it every
ComputeSpec of the cluster, the session's shared compute's included.

Every ```sh block of the page runs, in order, in one bash (-euo pipefail), with the page's
variables set for this cluster: the image loaded with ``ctr`` into the node's containerd,
and the chart values this cluster needs (hostNetwork with free loopback ports, the API
server's loopback address for the operator).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster.cluster import Cluster, Ports
from tests.cluster.compute import cluster_values
from tests.pgserver import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "quickstart.md"


def blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_page_covers_every_step() -> None:
    script = "\n".join(blocks())
    for step in (
        "scripts/build-image",
        "helm install",
        "wait computespec",
        "psql",
        "patch computespec",
        "helm uninstall",
        "delete namespace",
        "delete crd",
    ):
        assert step in script, step


def test_quickstart_runs_as_written(cluster: Cluster, tmp_path: Path) -> None:
    ns = f"qs-{uuid.uuid4().hex[:6]}"
    release = "compute-ctl-1"
    ports = Ports.free()
    # The values this cluster needs beyond the page's: what Compute gives every test pod,
    # less the image and spec the page sets itself.
    values = cluster_values(cluster, ports)
    values.pop("image")
    values["ports"].pop("postgres")
    values_file = tmp_path / "cluster-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    env = cluster.env() | {
        "NS": ns,
        "RELEASE": release,
        "PGPORT": str(ports.postgres),
        "LOCAL_PORT": str(free_port()),
        "LOAD": f"ctr --address {cluster.node.socket} --namespace k8s.io images import",
        "EXTRA_VALUES": f"-f {values_file}",
    }
    env["PATH"] = f"/usr/lib/postgresql/15/bin:{env['PATH']}"
    script = "set -euo pipefail\n" + "\n".join(blocks())
    try:
        proc = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    finally:
        cluster.apply_crd()  # the page's teardown removes it; later tests need it
        cluster.kubectl(
            "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False
        )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"app|{ports.postgres}" in proc.stdout
