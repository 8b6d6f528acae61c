"""Credentials from Secrets on a real API server (issue 13, security 2).

The resource names Secret keys (``spec.credentials``); the operator, as the shipped
ServiceAccount (whose Role may ``get`` only ``compute-1-credentials``), reads them at
reconcile time and pushes their values to a real compute_ctl. A password logs in to the
real postgres; a rotated Secret is applied again; a missing Secret or key stops the push
with a reason; a Secret the Role does not name cannot be read; and no password, token
or verifier appears in the resource, its annotations, status, Events or either log.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import psycopg
import pytest

from compute_ctl.compute import spec as spec_mod
from tests.apiserver import conftest
from tests.apiserver import pod as pod_

pytestmark = [pytest.mark.apiserver, pytest.mark.postgres, pytest.mark.slow]

SECRET = "compute-1-credentials"  # the name manifests/rbac.yaml lets the operator read


def _ref(key: str, name: str = SECRET) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


APP_PASSWORD = {"roles": [{"name": "app", "passwordFrom": _ref("app")}]}


def _core(pod: pod_.Pod) -> Any:
    return kubernetes.client.CoreV1Api(pod.admin)


def _put_secret(admin: Any, namespace: str, data: dict[str, str], name: str = SECRET) -> None:
    core: Any = kubernetes.client.CoreV1Api(admin)
    body = {"metadata": {"name": name}, "stringData": data}
    try:
        core.create_namespaced_secret(namespace, body)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def _login(pod: pod_.Pod, password: str, user: str = "app") -> bool:
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=pod.compute.pg_port,
            user=user,
            password=password,
            dbname="app",
            connect_timeout=5,
        ) as conn:
            return conn.execute("SELECT current_user").fetchone() == (user,)
    except psycopg.OperationalError:
        return False


def _reason(pod: pod_.Pod, reason: str) -> dict[str, Any] | None:
    status = pod.status()
    return status if pod.condition(status, "Reconciled").get("reason") == reason else None


@pytest.fixture
def secret_pod(admin: Any, namespace: str, start_pod: conftest.PodFactory) -> Iterator[pod_.Pod]:
    """A compute whose role ``app`` gets its password from ``compute-1-credentials``, and
    both storage tokens from it too; Secrets are read again every second."""
    _put_secret(admin, namespace, {"app": "first-pw-1", "token": "storage-jwt-1"})
    credentials = {**APP_PASSWORD, "storageAuthTokenFrom": _ref("token")}
    with start_pod(resync_interval=1.0, secret_interval=1.0, credentials=credentials) as pod:
        yield pod


def test_a_password_from_a_secret_logs_in_and_a_rotation_is_applied(
    secret_pod: pod_.Pod,
) -> None:
    pod = secret_pod
    status = pod.wait_reconciled(1)
    assert _login(pod, "first-pw-1")
    assert not _login(pod, "wrong")
    # What compute_ctl runs is the resource's spec with the Secret's values in place: the
    # verifier postgres holds and the storage token (compute_ctl's own hash says so).
    ((verifier,),) = pod.catalog("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    pushed = pod.resources.compute_spec(pod.get())
    pushed["cluster"]["roles"][0]["encrypted_password"] = verifier
    pushed["storage_auth_token"] = "storage-jwt-1"
    assert status["specHash"] == spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(pushed))

    _put_secret(pod.admin, pod.resources.namespace, {"app": "second-pw-2", "token": "jwt-2"})
    pod.wait(lambda: _login(pod, "second-pw-2"), what="the rotated password applied")
    assert not _login(pod, "first-pw-1")
    status = pod.wait_reconciled(1)  # the resource did not change: same generation
    assert pod.compute.status()["applied_spec_hash"] == status["specHash"]
    # Events are posted after the status is written.
    pod.wait(lambda: len(pod.events("Configured")) >= 2, what="a second Configured event")
    assert len(pod.events("Configured")) == 2


def test_a_missing_secret_or_key_stops_the_push_until_it_appears(
    admin: Any, namespace: str, start_pod: conftest.PodFactory
) -> None:
    with start_pod(resync_interval=1.0, secret_interval=1.0, credentials=APP_PASSWORD) as pod:
        status = pod.wait(lambda: _reason(pod, "SecretMissing"), what="Reconciled=SecretMissing")
        reconciled = pod.condition(status, "Reconciled")
        assert reconciled["status"] == "False"
        assert f"Secret '{SECRET}' not found" in reconciled["message"]
        assert pod.compute.status()["status"] == "empty"  # nothing was pushed
        # Events are posted after the status is written.
        events = pod.wait(lambda: pod.events("SecretMissing"), what="a SecretMissing event")
        assert [e.type for e in events] == ["Warning"]

        _put_secret(admin, namespace, {"other": "x"})
        status = pod.wait(
            lambda: "has no key 'app'" in json.dumps(_reason(pod, "SecretMissing") or {}),
            what="the missing key named",
        )
        assert pod.compute.status()["status"] == "empty"

        _put_secret(admin, namespace, {"app": "late-pw-3"})
        pod.wait_reconciled(1)
        assert _login(pod, "late-pw-3")


def test_a_secret_the_role_does_not_name_cannot_be_read(
    admin: Any, namespace: str, start_pod: conftest.PodFactory
) -> None:
    _put_secret(admin, namespace, {"app": "elsewhere-pw"}, name="not-in-the-role")
    credentials = {"roles": [{"name": "app", "passwordFrom": _ref("app", "not-in-the-role")}]}
    with start_pod(resync_interval=1.0, credentials=credentials) as pod:
        status = pod.wait(
            lambda: _reason(pod, "SecretUnreadable"), what="Reconciled=SecretUnreadable"
        )
        assert "forbidden" in pod.condition(status, "Reconciled")["message"]
        assert pod.compute.status()["status"] == "empty"
        # The operator asked for that one Secret by name, and for nothing else.
        secret_calls = {
            (r["verb"], r["objectRef"].get("name"))
            for r in pod.operator_requests(resource="secrets")
        }
        assert secret_calls == {("get", "not-in-the-role")}


def _forms(password: str, user: str) -> set[str]:
    """What would betray a password: itself, base64 (a Secret's data), its md5 verifier."""
    md5 = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324
    return {password, base64.b64encode(password.encode()).decode(), md5}


def _verifier_parts(verifier: str) -> set[str]:
    """A SCRAM verifier, and its StoredKey and ServerKey (each password-equivalent for a
    SCRAM login replay), in the spellings JSON and logs would give them."""
    stored, server = verifier.split("$")[2].split(":")
    return {verifier, stored, server, json.dumps(verifier)[1:-1]}


def test_no_password_token_or_verifier_leaks(secret_pod: pod_.Pod) -> None:
    pod = secret_pod
    pod.wait_reconciled(1)
    ((first,),) = pod.catalog("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    _put_secret(pod.admin, pod.resources.namespace, {"app": "second-pw-2", "token": "jwt-2"})
    pod.wait(lambda: _login(pod, "second-pw-2"), what="the rotated password applied")
    pod.wait_reconciled(1)
    ((second,),) = pod.catalog("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    needles = (
        _forms("first-pw-1", "app")
        | _forms("second-pw-2", "app")
        | _forms("storage-jwt-1", "")
        | _forms("jwt-2", "")
        | _verifier_parts(first)
        | _verifier_parts(second)
    )
    obj = pod.get()
    events = _core(pod).list_namespaced_event(pod.resources.namespace).items
    haystacks = {
        "resource": json.dumps(obj),
        "annotations": json.dumps(obj["metadata"].get("annotations")),
        "status": json.dumps(obj.get("status")),
        "events": json.dumps([e.to_dict() for e in events], default=str),
        "operator log": pod.operator.log_path.read_text(errors="replace"),
        "compute_ctl log": pod.compute.log_path.read_text(errors="replace"),
    }
    assert "Configured" in haystacks["events"]
    assert "SCRAM-SHA-256" not in haystacks["resource"]
    leaks = sorted(
        (where, needle) for where, text in haystacks.items() for needle in needles if needle in text
    )
    assert leaks == []
