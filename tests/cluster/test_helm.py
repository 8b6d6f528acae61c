"""Scenarios a, d, i of issue 14 on real pods: helm install, kubectl apply changes, helm upgrade.

They share the session's compute (``shared``), in this order: a looks at the fresh install.
"""

from __future__ import annotations

import pytest

from tests.cluster.cluster import wait_for
from tests.cluster.compute import INSTALL_BOUND, Compute, spec

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def test_a_helm_install_ready_printer_columns_and_events(shared: Compute) -> None:
    compute, kube = shared, shared.ns  # installed by the fixture: helm install, then Ready

    # What a user sees: kubectl's printer columns from the CRD.
    header, row = kube.kubectl("get", "cspec", compute.name).splitlines()
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert columns["STATUS"] == "running"
    assert columns["READY"] == "True"
    assert columns["OBSERVED"] == str(compute.generation())

    # The role and database are live in postgres, reached on the pod's (host) port.
    assert compute.query("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == [("1",)]
    assert compute.query("SELECT 1 FROM pg_database WHERE datname = 'app'") == [("1",)]

    # The Events show the transition to Ready, posted once (after the status).
    def reasons() -> list[str]:
        return [e["reason"] for e in kube.events(compute.name)]

    wait_for(lambda: "Ready" in reasons(), what="a Ready event")
    assert reasons().count("Ready") == 1, reasons()

    # The image carries what the Neon-parity features run (Dockerfile): the audit and
    # prewarm extensions for this postgres, pgbouncer and rsyslogd for their sidecars.
    available = compute.query(
        "SELECT name FROM pg_available_extensions WHERE name IN "
        "('pg_buffercache', 'pg_prewarm', 'pgaudit', 'pgauditlogtofile') ORDER BY name"
    )
    assert available == [("pg_buffercache",), ("pg_prewarm",), ("pgaudit",), ("pgauditlogtofile",)]
    versions = kube.sh(compute.pod, "compute-ctl", "pgbouncer -V; rsyslogd -v")
    assert versions.startswith("PgBouncer 1."), versions
    assert "\nrsyslogd " in versions, versions


def test_d_apply_changes_observed_generation_and_restart_required(shared: Compute) -> None:
    compute, kube = shared, shared.ns
    start = compute.generation()

    # A reloadable setting, a new role, a new database: one kubectl apply.
    changed = spec(
        compute.ports,
        roles=("app", "reader"),
        databases=("app", "shop"),
        settings={"work_mem": "7MB"},
    )
    compute.apply_spec(changed)
    generation = compute.generation()
    assert generation == start + 1
    kube.wait_ready(compute.name, generation=generation, timeout=60)
    assert compute.query("SHOW work_mem") == [("7MB",)]
    assert compute.query("SELECT 1 FROM pg_roles WHERE rolname = 'reader'") == [("1",)]
    assert compute.query("SELECT 1 FROM pg_database WHERE datname = 'shop'") == [("1",)]

    # A restart-only setting: applied to the config, RestartRequired=True until a restart.
    restart = spec(
        compute.ports,
        roles=("app", "reader"),
        databases=("app", "shop"),
        settings={"work_mem": "7MB", "max_connections": "42"},
    )
    compute.apply_spec(restart)
    wait_for(
        lambda: (kube.condition(compute.name, "RestartRequired") or {}).get("status") == "True",
        what="RestartRequired=True",
        timeout=60,
    )
    assert kube.cspec(compute.name)["status"]["observedGeneration"] == start + 2
    assert compute.query("SHOW max_connections") != [("42",)]  # not live before a restart
    wait_for(  # events are posted after the status
        lambda: "RestartRequired" in [e["reason"] for e in kube.events(compute.name)],
        what="a RestartRequired event",
    )


def test_i_helm_upgrade_rolls_the_pod_and_reconciles_again(shared: Compute) -> None:
    compute, kube = shared, shared.ns
    before = kube.pod(compute.pod)["metadata"]["uid"]

    # A changed value that reaches the pod template: the operator's log level.
    compute.extra = {"operator": {"logLevel": "INFO"}}
    compute.upgrade(spec(compute.ports, roles=("app", "after_upgrade"), databases=("app",)))
    generation = compute.generation()

    def rolled() -> bool:
        pod = kube.get_or_none("pod", compute.pod)
        return pod is not None and pod["metadata"]["uid"] != before

    wait_for(rolled, what="the pod replaced", timeout=90)
    kube.wait_pod_ready(compute.pod, timeout=INSTALL_BOUND)
    kube.wait_ready(compute.name, generation=generation, timeout=INSTALL_BOUND)
    operator = next(
        c for c in kube.pod(compute.pod)["spec"]["containers"] if c["name"] == "operator"
    )
    assert "--log-level=INFO" in operator["args"]
    assert compute.query("SELECT 1 FROM pg_roles WHERE rolname = 'after_upgrade'") == [("1",)]
