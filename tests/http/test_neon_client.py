"""A client written from the Neon references alone (``neon_compute_ctl.md`` §7,
``neon_parity.md`` §13), not from this project's code or its own client, exercised against
every route both implementations have on a real compute_ctl process: method, port, auth,
request bodies, status codes and response shapes must be what a Neon control plane (or
the neon extension, on the internal port) expects."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from joserfc.jwk import OKPKey

from tests.http import realcompute
from tests.support import compute_process, jwts, specs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_KEY: OKPKey = jwts.ed25519()


@dataclasses.dataclass
class NeonClient:
    """Neon's compute_ctl API as the reference describes it: the external port needs a
    Bearer JWT (``compute_id`` claim) except ``/metrics``; the internal port has no auth."""

    external: str
    internal: str
    token: str

    def ext(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, self.external + path, headers=headers, timeout=60, **kw)

    def open_ext(self, method: str, path: str) -> requests.Response:
        return requests.request(method, self.external + path, timeout=60)

    def int(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.internal + path, timeout=60, **kw)


@pytest.fixture(scope="module")
def compute() -> Iterator[compute_process.ComputeProcess]:
    with realcompute.compute_ctl(
        jwks=[jwts.public_jwk(_KEY)], extra_args=["--failpoints"]
    ) as running:
        yield running


@pytest.fixture(scope="module")
def neon(compute: compute_process.ComputeProcess) -> NeonClient:
    token = jwts.token(_KEY, {"compute_id": realcompute.COMPUTE_ID})
    return NeonClient(external=compute.external, internal=compute.internal, token=token)


def _is_error(r: requests.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict)
    assert isinstance(body["error"], str)


def _status_shape(body: dict[str, Any]) -> None:
    # ComputeStatusResponse: start_time, tenant?, timeline?, status, last_active?, error?
    assert isinstance(body["start_time"], str)
    assert body["status"] in {
        "empty",
        "configuration_pending",
        "init",
        "running",
        "configuration",
        "failed",
        "termination_pending_fast",
        "termination_pending_immediate",
        "terminated",
    }
    for key in ("tenant", "timeline", "last_active", "error"):
        assert body.get(key) is None or isinstance(body[key], str), key


def test_every_response_has_a_request_id(neon: NeonClient) -> None:
    for r in (
        neon.ext("GET", "/status"),
        neon.open_ext("GET", "/metrics"),
        neon.int("GET", "/status"),
    ):
        assert r.headers["x-request-id"]


def test_auth_rules(neon: NeonClient) -> None:
    _is_error(neon.open_ext("GET", "/status"), 400)  # no Authorization header
    other = jwts.token(_KEY, {"compute_id": "someone-else"})
    r = requests.get(
        neon.external + "/status", headers={"Authorization": f"Bearer {other}"}, timeout=30
    )
    _is_error(r, 403)
    assert neon.open_ext("GET", "/metrics").status_code == 200  # open
    assert neon.int("GET", "/status").status_code == 200  # internal: no auth
    _is_error(neon.ext("GET", "/no/such/route"), 404)


def test_status(neon: NeonClient) -> None:
    r = neon.ext("GET", "/status")
    assert r.status_code == 200
    body = r.json()
    _status_shape(body)
    assert body["status"] == "running"


def test_metrics_json_and_prometheus(neon: NeonClient) -> None:
    r = neon.ext("GET", "/metrics.json")
    assert r.status_code == 200
    timings = r.json()
    for key in ("wait_for_spec_ms", "start_postgres_ms", "config_ms", "total_startup_ms"):
        assert isinstance(timings[key], int), key
    r = neon.open_ext("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'compute_ctl_up{build_tag="latest",status="running"} 1.0' in text
    for family, kind in (
        ("compute_ctl_up", "gauge"),
        ("compute_installed_extensions", "gauge"),
        ("compute_pg_current_downtime_ms", "gauge"),
        ("compute_pg_downtime_ms_total", "counter"),
        ("compute_audit_log_dir_size", "gauge"),
    ):
        assert f"# TYPE {family} {kind}" in text, family
    assert "_created" not in text  # Neon exports none
    # The start collects the installed extensions (plpgsql in postgres and template1) in
    # the background, as Neon does: wait for the report, with a deadline.
    deadline = time.monotonic() + 30
    while 'extension_name="plpgsql"' not in text:
        assert time.monotonic() < deadline, "no installed-extensions report"
        time.sleep(0.05)
        text = neon.open_ext("GET", "/metrics").text


def test_insights(neon: NeonClient) -> None:
    r = neon.ext("GET", "/insights")
    assert r.status_code == 200
    inner = r.json()
    assert isinstance(inner, str)  # a JSON-encoded string
    assert isinstance(json.loads(inner)["pg_stat_statements"], list)


def test_check_writability(neon: NeonClient) -> None:
    r = neon.ext("POST", "/check_writability")
    assert r.status_code == 200
    assert r.json() is True


def test_dbs_and_roles(neon: NeonClient) -> None:
    r = neon.ext("GET", "/dbs_and_roles")
    assert r.status_code == 200
    body = r.json()
    for role in body["roles"]:
        assert set(role) >= {"name", "encrypted_password", "options"}
    for db in body["databases"]:
        assert set(db) >= {"name", "owner", "options", "restrict_conn", "invalid"}
    assert "postgres" in {db["name"] for db in body["databases"]}


def test_database_schema(neon: NeonClient) -> None:
    r = neon.ext("GET", "/database_schema", params={"database": "postgres"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")  # Neon's, for SQL text
    assert "PostgreSQL database dump" in r.text
    _is_error(neon.ext("GET", "/database_schema", params={"database": "no_such_db"}), 404)


def test_internal_extensions_and_grants(neon: NeonClient) -> None:
    r = neon.int(
        "POST",
        "/extensions",
        json={"extension": "pgcrypto", "database": "postgres", "version": "1.3"},
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"extension": "pgcrypto", "version": "1.3"}
    request = {
        "database": "postgres",
        "schema": "public",
        "privileges": ["USAGE", "CREATE"],
        "role": "pg_monitor",
    }
    r = neon.int("POST", "/grants", json=request)
    assert r.status_code == 201, r.text
    assert r.json() == request


def test_extension_server_without_a_gateway(neon: NeonClient) -> None:
    # neon_parity.md section 12: no -r is 412 with Neon's message; is_library is a bool.
    r = neon.int("POST", "/extension_server/postgis-3.so?is_library=true")
    _is_error(r, 412)
    assert r.json() == {"error": "remote storage is not configured"}
    _is_error(neon.int("POST", "/extension_server/postgis?is_library=maybe"), 400)


def test_failpoints(neon: NeonClient) -> None:
    r = neon.int("POST", "/failpoints", json=[{"name": "after-apply", "actions": "off"}])
    assert r.status_code == 200
    _is_error(neon.int("POST", "/failpoints", json={"not": "a list"}), 400)


def test_lfc_prewarm_and_offload(neon: NeonClient) -> None:
    # neon_parity.md section 11: tagged states, 202 with an empty body, JWT on external.
    _is_error(neon.open_ext("GET", "/lfc/prewarm"), 400)  # no Authorization header
    assert neon.ext("GET", "/lfc/prewarm").json() == {"status": "not_prewarmed"}
    assert neon.ext("GET", "/lfc/offload").json() == {"status": "not_offloaded"}
    r = neon.ext("POST", "/lfc/offload")
    assert (r.status_code, r.content) == (202, b"")
    deadline = time.monotonic() + 30
    while (state := neon.ext("GET", "/lfc/offload").json())["status"] == "offloading":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The spec names no endpoint: Neon's words for the first missing piece.
    assert state == {
        "status": "failed",
        "error": "pspec.endpoint_id missing, other endpoint_id not provided",
    }
    text = neon.open_ext("GET", "/metrics").text
    assert "# TYPE compute_ctl_lfc_offloads_total counter" in text
    assert "compute_ctl_lfc_offload_errors_total 1.0" in text
    assert "compute_ctl_lfc_prewarms_total 0.0" in text


def test_promote_of_a_primary(neon: NeonClient, compute: compute_process.ComputeProcess) -> None:
    # neon_parity.md section 10: {"spec", "wal_flush_lsn"}; failures are PromoteState.
    body = {"spec": specs.local_spec(port=compute.pg_port), "wal_flush_lsn": "0/28F10D8"}
    r = neon.ext("POST", "/promote", json=body)
    assert r.status_code == 500, r.text
    assert r.json() == {"status": "failed", "error": 'compute mode "primary" is not replica'}
    _is_error(neon.ext("POST", "/promote", json={"spec": body["spec"]}), 400)


def test_configure_then_terminate(
    neon: NeonClient, compute: compute_process.ComputeProcess
) -> None:
    _is_error(neon.ext("POST", "/configure", json={"spec": {"cluster": {}}}), 400)
    spec = specs.local_spec(port=compute.pg_port)
    r = neon.ext("POST", "/configure", json={"spec": spec, "compute_ctl_config": {}})
    assert r.status_code == 200, r.text
    _status_shape(r.json())
    assert r.json()["status"] == "running"
    _is_error(neon.ext("POST", "/terminate", params={"mode": "sideways"}), 400)
    # Last: terminate. (Neon answers a second call 201 while it lingers 30 s before
    # exiting; this compute_ctl exits once postgres has stopped, so there is no second.)
    r = neon.ext("POST", "/terminate", params={"mode": "fast"})
    assert r.status_code == 200, r.text
    assert r.json() == {"lsn": None}  # local mode: no Neon storage, no LSN
