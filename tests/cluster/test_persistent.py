"""Scenario e of issue 14, second half: with persistent storage, a restart keeps the rows.

The chart's ``pgdata.persistentSize`` makes a volume claim (and passes ``--keep-pgdata``,
issue 13 defect 4). Here the claim binds to a static PersistentVolume on the node: a
``hostPath`` directory in the test's temporary directory, pre-bound to the StatefulSet's
claim by ``claimRef`` under a storage class name no provisioner serves.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster.cluster import Namespace, container_pid, restarts, wait_for
from tests.cluster.compute import Compute, installed

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

RECOVERY_BOUND = 75.0  # as test_kills.py: SIGKILL of compute_ctl to Ready with its spec
POSTGRES_UID = 999  # the image's postgres user (Dockerfile), the pod's runAsUser


@pytest.fixture
def volume(kube: Namespace) -> Iterator[tuple[str, Path]]:
    """A static PersistentVolume for the claim ``pgdata-keep-compute-ctl-0``: its storage
    class name and its directory on the node."""
    directory = kube.tmp_path / "pv"
    directory.mkdir()
    os.chown(directory, POSTGRES_UID, POSTGRES_UID)
    name, storage_class = f"{kube.name}-pgdata", f"{kube.name}-static"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "claimRef": {"namespace": kube.name, "name": "pgdata-keep-compute-ctl-0"},
            "hostPath": {"path": str(directory), "type": "Directory"},
        },
    }
    kube.cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pv))
    try:
        yield storage_class, directory
    finally:
        kube.cleanup()  # the claim goes with the namespace; then the volume can go
        kube.cluster.kubectl("delete", "pv", name, "--wait=false", check=False)


def test_e_persistent_rows_survive_a_compute_ctl_kill(
    kube: Namespace, volume: tuple[str, Path]
) -> None:
    storage_class, directory = volume
    compute: Compute = installed(
        kube, "keep", pgdata={"persistentSize": "1Gi", "storageClassName": storage_class}
    )
    claim = kube.get("pvc", f"pgdata-{compute.pod}")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["volumeName"] == f"{kube.name}-pgdata"
    assert (directory / "pgdata" / "PG_VERSION").exists()  # PGDATA lives on the volume
    compute.query("CREATE TABLE kept AS SELECT g AS i FROM generate_series(1, 100) AS g")

    before = restarts(kube, compute.pod, "compute-ctl")
    started = time.monotonic()
    os.kill(container_pid(kube, compute.pod, "compute-ctl"), signal.SIGKILL)
    wait_for(
        lambda: restarts(kube, compute.pod, "compute-ctl") > before,
        what="compute-ctl restarted",
        timeout=60,
    )

    def ready_again() -> bool:
        status = kube.cspec(compute.name).get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return ready and bool(compute.query("SELECT 1 FROM pg_roles WHERE rolname = 'app'"))

    try:
        wait_for(ready_again, what="Ready again with its spec", timeout=RECOVERY_BOUND)
    except TimeoutError as e:
        previous = kube.logs(compute.pod, "compute-ctl", previous=True)
        raise AssertionError(f"{e}\n{kube.diagnostics()}\n--- previous:\n{previous}") from e
    assert time.monotonic() - started < RECOVERY_BOUND
    assert compute.query("SELECT count(*), sum(i) FROM kept") == [("100", "5050")]
