"""Nothing unauthenticated reconfigures or terminates the compute (issue 13, security 1).

The internal port (loopback, no auth: postgres itself can reach it) serves only Neon's
internal routes and the probes; the operator calls the external API with a JWT signed by
its own key, and the external API refuses the same calls without that key.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.apiserver import conftest
from tests.apiserver import pod as pod_
from tests.operator import keys as keys_mod

pytestmark = pytest.mark.apiserver


def _call(url: str, method: str = "POST", *, body: Any = None, headers: Any = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            code: int = response.status
            return code
    except urllib.error.HTTPError as e:
        return e.code


def test_the_internal_port_refuses_configure_and_terminate(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    compute = pod.compute
    spec = pod.spec(roles=("app", "intruder"))
    for path in ("/configure", "/terminate?mode=immediate", "/status", "/dbs_and_roles"):
        method = "GET" if path in ("/status", "/dbs_and_roles") else "POST"
        assert _call(compute.internal_url + path, method, body={"spec": spec}) == 404, path
    # What postgres and its extensions call, and the probes, are still there.
    assert _call(compute.internal_url + "/healthz", "GET") == 200
    assert _call(compute.internal_url + "/grants", body={}) == 400  # served: a bad body
    assert compute.status()["status"] == "running"
    assert ("intruder",) not in pod.catalog("SELECT rolname FROM pg_roles")


def test_the_external_api_refuses_the_operators_calls_without_its_key(pod: pod_.Pod) -> None:
    pod.wait_reconciled(1)
    compute = pod.compute
    spec = pod.spec(roles=("app", "intruder"))
    other = keys_mod.make(
        compute.workdir / "..", "someone-else"
    )  # a key compute_ctl does not trust
    forged = keys_mod.bearer(other, compute.compute_id)
    for headers, code in (({}, 400), (forged, 401)):
        assert _call(compute.url + "/configure", body={"spec": spec}, headers=headers) == code
        assert _call(compute.url + "/terminate?mode=immediate", headers=headers) == code
        assert _call(compute.url + "/status", "GET", headers=headers) == code
    # A token for another compute, signed with the right key: 403.
    wrong_id = keys_mod.bearer(compute.keys, "compute-2")
    assert _call(compute.url + "/terminate?mode=immediate", headers=wrong_id) == 403
    assert compute.status()["status"] == "running"
    assert ("intruder",) not in pod.catalog("SELECT rolname FROM pg_roles")


def test_an_operator_without_the_key_cannot_configure(
    start_pod: conftest.PodFactory,
) -> None:
    with start_pod(
        resync_interval=1.0,
        key_file=False,
    ) as pod:

        def refused() -> dict[str, Any] | None:
            status = pod.status()
            reconciled = pod.condition(status, "Reconciled")
            return status if "HTTP 400" in reconciled.get("message", "") else None

        pod.wait(refused, what="the operator's unauthenticated calls refused")
        assert pod.compute.status()["status"] == "empty"


def test_kopfs_last_handled_record_holds_no_verifier(
    start_pod: conftest.PodFactory,
) -> None:
    """kopf's last-handled-spec annotation is a hash, not a copy of the spec (whose role
    verifiers are password-equivalent); changes are still noticed."""
    # Neon's spec form of an md5 verifier: 32 hex digits (compute_ctl adds "md5").
    verifier = hashlib.md5(b"s3cret-pw" + b"app").hexdigest()  # noqa: S324

    def with_password(pod: pod_.Pod) -> dict[str, Any]:
        spec = pod.spec()
        spec["cluster"]["roles"][0]["encrypted_password"] = verifier
        return spec

    with start_pod(
        resync_interval=1.0,
        spec=with_password,
    ) as pod:
        pod.wait_reconciled(1)
        changed = with_password(pod)
        changed["cluster"]["roles"].append({"name": "second"})
        pod.resources.patch_spec(pod.name, changed)
        pod.wait_reconciled(2)
        assert ("second",) in pod.catalog("SELECT rolname FROM pg_roles")
        annotations = pod.get()["metadata"].get("annotations") or {}
        record = json.loads(annotations[f"{pod.resources.group}/last-handled-spec"])
        assert set(record) == {"sha256"}
        assert verifier not in json.dumps(annotations)
        assert verifier not in json.dumps(pod.status())
