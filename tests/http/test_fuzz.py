"""Fuzz the API from its OpenAPI document (schemathesis) against a running compute.

Malformed input must never produce a 5xx, every response must match the document, and a
rejected request must leave the compute's state exactly as it was. Requests that would
legitimately change state are neutralised: ``/configure`` always carries an ``If-Match``
that cannot match (so a valid body gets 412 after validation), and a valid ``/terminate``
is not sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode

from compute_ctl.compute.http import openapi
from tests import pgserver
from tests.http import jwts, live, realcompute

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NEVER_MATCHES = '"fuzz-never-matches"'
EXAMPLES_PER_OPERATION = 15  # 6 operations take input, 8 do not: about 100 requests


_KEY = jwts.ed25519()
_AUTH = {"Authorization": "Bearer " + jwts.token(_KEY, {"compute_id": realcompute.COMPUTE_ID})}


class Served(Protocol):
    @property
    def internal(self) -> str: ...

    @property
    def external(self) -> str: ...


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A real compute_ctl when the node is in the tree; else the HTTP layer over the double."""
    jwks = [jwts.public_jwk(_KEY)]
    if realcompute.available():
        with realcompute.compute_ctl(jwks=jwks) as compute:
            yield compute
    else:
        own_pg: pgserver.PgServer = request.getfixturevalue("own_pg")
        with live.live_double(own_pg, jwks=jwks) as double:
            yield double


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


def _would_terminate(case: Any) -> bool:
    mode = (case.query or {}).get("mode", "fast")
    return bool(case.path == "/terminate" and mode in ("fast", "immediate"))


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api_survives_fuzzing(case: Any, served: Served) -> None:
    if _would_terminate(case):
        return
    if case.path == "/configure":
        case.headers = {**(case.headers or {}), "If-Match": NEVER_MATCHES}
    # Internal-only operations are fuzzed on the internal port, the rest on the external one.
    internal = bool(case.operation.definition.raw.get("x-internal-only"))
    base = served.internal if internal else served.external
    before = _snapshot(served.internal)
    response = case.call(base_url=base, headers=_AUTH, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text)
    assert "x-request-id" in response.headers
    case.validate_response(response, excluded_checks=_EXCLUDED_CHECKS)
    assert _snapshot(served.internal) == before
