"""Fuzz the API from its OpenAPI document (schemathesis) against a running compute.

Malformed input must never produce a 5xx, every response must match the document, and a
rejected request must leave the compute's state exactly as it was. A second test generates
well-formed but semantically invalid specs (hypothesis): each is refused by admission
with a 400, and neither the status nor ``postgresql.conf`` nor its load time moves.
Requests that would legitimately change state are neutralised: ``/configure`` always
carries an ``If-Match`` that cannot match (so a valid body gets 412 after validation), and
a valid ``/terminate`` is not sent. A valid ``/promote`` gets Neon's 500 ``failed`` answer,
as the compute is a primary, and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import psycopg
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from compute_ctl.compute.http import openapi
from tests.http import realcompute
from tests.support import compute_process, jwts, specs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NEVER_MATCHES = '"fuzz-never-matches"'
EXAMPLES_PER_OPERATION = 15  # 6 operations take input, 8 do not: about 100 requests


_KEY = jwts.ed25519()
_AUTH = {"Authorization": "Bearer " + jwts.token(_KEY, {"compute_id": realcompute.COMPUTE_ID})}


@pytest.fixture(scope="module")
def served() -> Iterator[compute_process.ComputeProcess]:
    """A real compute_ctl process."""
    with realcompute.compute_ctl(jwks=[jwts.public_jwk(_KEY)]) as compute:
        yield compute


schema = schemathesis.openapi.from_dict(openapi.load())
schema.config.generation.update(
    modes=[GenerationMode.NEGATIVE, GenerationMode.POSITIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    deterministic=True,
    # Auth has its own tests; here every request carries a valid token.
    with_security_parameters=False,
)
# The coverage phase alone would send ~800 boundary cases to /configure's large schema;
# the fuzzing phase with a fixed budget per operation keeps the run near 100 requests.
schema.config.phases.coverage.enabled = False


# Positive data may still be refused (a random database does not exist: 404). A request
# without a token gets Neon's 400, not the 401 schemathesis expects (see test_auth.py).
_EXCLUDED_CHECKS = [
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.ignored_auth,
]


def _snapshot(base: str) -> tuple[Any, ...]:
    body = requests.get(f"{base}/status", timeout=10).json()
    return (
        body["status"],
        body["desired_generation"],
        body["desired_spec_hash"],
        body["applied_generation"],
        body["applied_spec_hash"],
    )


_PROMOTE_PRIMARY = {"status": "failed", "error": 'compute mode "primary" is not replica'}


def _would_terminate(case: Any) -> bool:
    mode = (case.query or {}).get("mode", "fast")
    return bool(case.path == "/terminate" and mode in ("fast", "immediate"))


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api_survives_fuzzing(case: Any, served: compute_process.ComputeProcess) -> None:
    if _would_terminate(case):
        return
    if case.path == "/configure":
        case.headers = {**(case.headers or {}), "If-Match": NEVER_MATCHES}
    # Internal-only operations are fuzzed on the internal port, the rest on the external one.
    internal = bool(case.operation.definition.raw.get("x-internal-only"))
    base = served.internal if internal else served.external
    before = _snapshot(served.internal)
    response = case.call(base_url=base, headers=_AUTH, timeout=30)
    excluded = _EXCLUDED_CHECKS
    if case.path == "/promote" and response.status_code == 500:
        # A valid /promote of this primary: Neon's PromoteState answer, changing nothing.
        assert response.json() == _PROMOTE_PRIMARY, response.text
        excluded = [*excluded, schemathesis.checks.not_a_server_error]
    else:
        assert response.status_code < 500, (response.status_code, response.text)
    assert "x-request-id" in response.headers
    case.validate_response(response, excluded_checks=excluded)
    assert _snapshot(served.internal) == before


# --- semantically invalid specs --------------------------------------------------------
# Well-formed JSON that admission must refuse: a valid local spec, some random extra
# roles and databases, and at least one flaw drawn below. Every one must get a 400 (for the
# request and its dry run) and leave the status, postgresql.conf and its load time as
# they were.

_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: not n.startswith(("pg_", "ghost")) and n not in ("public", "none")
)
_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


def _role(name: str) -> dict[str, Any]:
    return {"name": name}


@st.composite
def _flaw(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    kind = draw(
        st.sampled_from(
            [
                "duplicate-role",
                "duplicate-db",
                "ghost-owner",
                "reserved-role",
                "privileged-role",
                "rename-without-target",
                "delta-privileged",
                "unsafe-id",
                "setting-name",
                "role-connlimit",
                "db-connlimit",
                "suspend-timeout",
                "unknown-mode",
            ]
        )
    )
    name = draw(_NAME)
    cluster_flaws: dict[str, Callable[[dict[str, Any]], None]] = {
        "duplicate-role": lambda c: c["roles"].extend([_role(name), _role(name)]),
        "duplicate-db": lambda c: c["databases"].extend(
            [{"name": name, "owner": "neon_superuser"}] * 2
        ),
        "ghost-owner": lambda c: c["databases"].append({"name": name, "owner": "ghost_" + name}),
        "reserved-role": lambda c: c["roles"].append(
            _role(draw(st.sampled_from(["public", "none", "pg_" + name])))
        ),
        "privileged-role": lambda c: c["roles"].append(_role("neon_superuser")),
        "setting-name": lambda c: c["settings"].append(
            {
                "name": name + draw(st.sampled_from(["\n", "\r", " ", "'", "=", "#", "\t"])),
                "value": "1",
                "vartype": "integer",
            }
        ),
        "role-connlimit": lambda c: c["roles"].append(
            {"name": name, "options": [_connlimit(draw(_OUT_OF_RANGE))]}
        ),
        "db-connlimit": lambda c: c["databases"].append(
            {"name": name, "owner": "neon_superuser", "options": [_connlimit(draw(_OUT_OF_RANGE))]}
        ),
    }
    if kind in cluster_flaws:
        return lambda spec: cluster_flaws[kind](spec["cluster"])
    if kind == "rename-without-target":
        action = draw(st.sampled_from(["rename_role", "rename_db"]))
        return lambda spec: spec.update(delta_operations=[{"action": action, "name": name}])
    if kind == "delta-privileged":
        delta = draw(
            st.sampled_from(
                [
                    {"action": "delete_role", "name": "neon_superuser"},
                    {"action": "rename_role", "name": "neon_superuser", "new_name": name},
                ]
            )
        )
        return lambda spec: spec.update(delta_operations=[delta])
    if kind == "unsafe-id":
        field = draw(st.sampled_from(["project_id", "branch_id", "endpoint_id"]))
        value = draw(st.text(max_size=40).filter(lambda v: not _ID_OK.fullmatch(v)))
        return lambda spec: spec.update({field: value})
    if kind == "suspend-timeout":
        timeout = draw(st.integers(max_value=-2) | st.integers(min_value=2**63))
        return lambda spec: spec.update(suspend_timeout_seconds=timeout)
    mode = draw(st.text(max_size=12).filter(lambda m: m not in ("Primary", "Replica")))
    return lambda spec: spec.update(mode=mode)


_OUT_OF_RANGE = st.integers(max_value=-2) | st.integers(min_value=2**31)


def _connlimit(value: int) -> dict[str, Any]:
    return {"name": "CONNECTION LIMIT", "value": str(value), "vartype": "integer"}


@st.composite
def _invalid_spec(draw: st.DrawFn, *, port: int) -> dict[str, Any]:
    spec = specs.local_spec(port=port)
    extra = draw(st.lists(_NAME, max_size=3, unique=True))
    spec["cluster"]["roles"].extend(_role(n) for n in extra)
    for flaw in draw(st.lists(_flaw(), min_size=1, max_size=3)):
        flaw(spec)
    return spec


def _state(compute: compute_process.ComputeProcess) -> tuple[Any, ...]:
    with psycopg.connect(compute.dsn, connect_timeout=10) as conn:
        load_time = conn.execute("SELECT pg_conf_load_time()").fetchone()
    conf = (compute.base / "pgdata" / "postgresql.conf").read_bytes()
    return (_snapshot(compute.internal), conf, load_time)


def test_semantically_invalid_specs_are_refused(served: compute_process.ComputeProcess) -> None:
    before = _state(served)

    @hypothesis.given(spec=_invalid_spec(port=served.pg_port))
    @hypothesis.settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        database=None,
    )
    def check(spec: dict[str, Any]) -> None:
        for params in ({}, {"dry_run": "true"}):
            response = requests.post(
                f"{served.external}/configure",
                params=params,
                json={"spec": spec, "compute_ctl_config": {}},
                headers=_AUTH,
                timeout=30,
            )
            assert response.status_code == 400, (response.status_code, response.text)
            assert response.json()["error"]
        assert _state(served) == before

    check()
