"""Scenario c of issue 14 on real pods: a role whose password comes from a Secret.

The chart's ``credentials`` value puts ``spec.credentials`` into the ComputeSpec and lets
the operator ``get`` that one Secret. ``psql`` on the node, with the Secret's password,
logs in at the compute's postgres port (hostNetwork, loopback); after the Secret is
rotated, the new password logs in and the old one no longer does. Neither password, its
base64 (a Secret's ``data``) nor its verifier (md5 or SCRAM, or a SCRAM key) is anywhere
in the resource, its annotations, status, the namespace's Events or either container's
log. (Runs before test_quickstart.py, whose teardown deletes the CRD.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import pytest

from tests import pgserver
from tests.cluster.cluster import Namespace, wait_for
from tests.cluster.compute import Compute, installed

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

ROTATION_BOUND = 60.0  # operator.secretInterval (2 s) + a reconcile + the ALTER ROLE


def _secret(kube: Namespace, name: str, password: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "app", "password": password},
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(body))


def _psql(compute: Compute, password: str) -> subprocess.CompletedProcess[str]:
    """The host's psql, as a client outside the pod, at the pod's (host) postgres port."""
    psql = pgserver.tools().tool("psql")
    return subprocess.run(
        [
            str(psql),
            f"host=127.0.0.1 port={compute.ports.postgres} user=app dbname=app",
            "-AtXc",
            "SELECT current_user",
        ],
        env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _logs_in(compute: Compute, password: str) -> bool:
    proc = _psql(compute, password)
    return proc.returncode == 0 and proc.stdout.strip() == "app"


def _needles(password: str, verifier: str) -> set[str]:
    md5 = hashlib.md5((password + "app").encode()).hexdigest()  # noqa: S324
    stored, server = verifier.split("$")[2].split(":")
    return {password, base64.b64encode(password.encode()).decode(), md5, verifier, stored, server}


def test_c_password_from_a_secret_logs_in_and_never_leaks(kube: Namespace) -> None:
    release = "c"
    secret = f"{release}-compute-ctl-credentials"
    _secret(kube, secret, "c-first-pw-1")
    credentials = {
        "roles": [
            {"name": "app", "passwordFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}
        ]
    }
    compute = installed(kube, release, credentials=credentials, operator={"secretInterval": 2})
    assert compute.ns.cspec(compute.name)["spec"]["credentials"] == credentials

    assert _logs_in(compute, "c-first-pw-1"), _psql(compute, "c-first-pw-1").stderr
    assert not _logs_in(compute, "wrong-pw")
    ((first,),) = compute.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")

    _secret(kube, secret, "c-second-pw-2")
    wait_for(
        lambda: _logs_in(compute, "c-second-pw-2"),
        what="the rotated password applied",
        timeout=ROTATION_BOUND,
    )
    assert not _logs_in(compute, "c-first-pw-1")
    ((second,),) = compute.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert first.startswith("SCRAM-SHA-256$")
    assert second.startswith("SCRAM-SHA-256$")

    obj = kube.cspec(compute.name)
    haystacks = {
        "resource": json.dumps(obj),
        "annotations": json.dumps(obj["metadata"].get("annotations")),
        "status": json.dumps(obj.get("status")),
        "events": kube.kubectl("get", "events", "-o", "json"),
        "compute-ctl log": kube.logs(compute.pod, "compute-ctl"),
        "operator log": kube.logs(compute.pod, "operator"),
    }
    assert "Configured" in haystacks["events"]
    assert haystacks["compute-ctl log"].strip()
    assert haystacks["operator log"].strip()
    needles = _needles("c-first-pw-1", first) | _needles("c-second-pw-2", second)
    leaks = sorted(
        (where, needle) for where, text in haystacks.items() for needle in needles if needle in text
    )
    assert leaks == []
