"""JWT on the external port, one test per rule of Neon's authorize middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc.jwk import OKPKey, RSAKey

from compute_ctl.compute import spec as spec_mod
from tests.http.conftest import Api, ApiFactory
from tests.support import jwts

COMPUTE_ID = "compute-under-test"


@pytest.fixture(scope="module")
def ed_key() -> OKPKey:
    return jwts.ed25519()


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return jwts.rsa()


def _install(api: Api, *keys: dict[str, Any]) -> None:
    api.node.state.config = spec_mod.ComputeCtlConfig(jwks=spec_mod.Jwks(keys=list(keys)))


@pytest.fixture
async def secured(make_api: ApiFactory, ed_key: OKPKey) -> AsyncIterator[Api]:
    async with make_api(allow_unauthenticated=False, compute_id=COMPUTE_ID) as api:
        _install(api, jwts.public_jwk(ed_key, kid="ed"))
        yield api


async def _get(
    api: Api, token: str | None, *, path: str = "/status", raw: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {}
    if raw is not None:
        headers["Authorization"] = raw
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with api.session.get(f"{api.external}{path}", headers=headers) as r:
        body = await r.json() if r.content_type == "application/json" else {}
        return r.status, body


async def test_valid_compute_token_is_accepted(secured: Api, ed_key: OKPKey) -> None:
    token = jwts.token(ed_key, {"compute_id": COMPUTE_ID, "exp": jwts.in_an_hour()})
    status, body = await _get(secured, token)
    assert status == 200
    assert body["status"] == "empty"


async def test_token_without_exp_is_accepted(secured: Api, ed_key: OKPKey) -> None:
    # Neon requires no claim; exp is only checked when present.
    assert (await _get(secured, jwts.token(ed_key, {"compute_id": COMPUTE_ID})))[0] == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "token-without-scheme", "Bearer a b"],
)
async def test_missing_or_unparsable_header_is_400(secured: Api, header: str | None) -> None:
    status, body = await _get(secured, None, raw=header)
    assert status == 400
    assert "authorization" in body["error"]


async def test_garbage_token_is_401(secured: Api) -> None:
    for token in ("abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"):
        assert (await _get(secured, token))[0] == 401


async def test_token_signed_by_another_key_is_401(secured: Api) -> None:
    token = jwts.token(jwts.ed25519(), {"compute_id": COMPUTE_ID})
    status, body = await _get(secured, token)
    assert status == 401
    assert body == {"error": "failed to verify authorization token"}


async def test_expired_token_is_401(secured: Api, ed_key: OKPKey) -> None:
    token = jwts.token(ed_key, {"compute_id": COMPUTE_ID, "exp": int(time.time()) - 3600})
    assert (await _get(secured, token))[0] == 401


async def test_expiry_is_checked_on_every_use(
    secured: Api, ed_key: OKPKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified token is cached, but its exp is re-read each time."""
    exp = int(time.time()) + 3600
    token = jwts.token(ed_key, {"compute_id": COMPUTE_ID, "exp": exp})
    assert (await _get(secured, token))[0] == 200
    monkeypatch.setattr(time, "time", lambda: exp + 3600.0)
    assert (await _get(secured, token))[0] == 401


async def test_wrong_compute_id_is_403(secured: Api, ed_key: OKPKey) -> None:
    status, body = await _get(secured, jwts.token(ed_key, {"compute_id": "someone-else"}))
    assert status == 403
    assert "compute ID" in body["error"]


async def test_empty_claims_are_403(secured: Api, ed_key: OKPKey) -> None:
    assert (await _get(secured, jwts.token(ed_key, {})))[0] == 403


async def test_admin_scope_with_compute_audience_is_accepted(secured: Api, ed_key: OKPKey) -> None:
    # No compute_id needed with the admin scope.
    for aud in (["compute"], ["other", "compute"], "compute"):
        token = jwts.token(ed_key, {"scope": "compute_ctl:admin", "aud": aud})
        assert (await _get(secured, token))[0] == 200, aud


@pytest.mark.parametrize("claims", [{}, {"aud": []}, {"aud": ["control-plane"]}, {"aud": "x"}])
async def test_admin_scope_without_compute_audience_is_401(
    secured: Api, ed_key: OKPKey, claims: dict[str, Any]
) -> None:
    token = jwts.token(ed_key, {"scope": "compute_ctl:admin", "compute_id": COMPUTE_ID, **claims})
    status, body = await _get(secured, token)
    assert status == 401
    assert "audience" in body["error"]


async def test_unknown_scope_is_401(secured: Api, ed_key: OKPKey) -> None:
    token = jwts.token(ed_key, {"scope": "admin", "compute_id": COMPUTE_ID})
    assert (await _get(secured, token))[0] == 401


async def test_rs256_key_is_used_when_declared(
    make_api: ApiFactory, ed_key: OKPKey, rsa_key: RSAKey
) -> None:
    async with make_api(allow_unauthenticated=False, compute_id=COMPUTE_ID) as api:
        _install(api, jwts.public_jwk(ed_key), jwts.public_jwk(rsa_key, alg="RS256"))
        token = jwts.token(rsa_key, {"compute_id": COMPUTE_ID})
        assert (await _get(api, token))[0] == 200
        # Keys are tried in turn: the Ed25519 one still works.
        assert (await _get(api, jwts.token(ed_key, {"compute_id": COMPUTE_ID})))[0] == 200


async def test_rsa_key_without_rs256_alg_is_not_used(make_api: ApiFactory, rsa_key: RSAKey) -> None:
    async with make_api(allow_unauthenticated=False, compute_id=COMPUTE_ID) as api:
        _install(api, jwts.public_jwk(rsa_key))
        status, body = await _get(api, jwts.token(rsa_key, {"compute_id": COMPUTE_ID}))
        assert status == 401
        assert "not configured" in body["error"]


async def test_algorithm_confusion_is_401(
    make_api: ApiFactory, ed_key: OKPKey, rsa_key: RSAKey
) -> None:
    """An RS256 token is not verified by an Ed25519 key, nor the reverse."""
    async with make_api(allow_unauthenticated=False, compute_id=COMPUTE_ID) as api:
        _install(api, jwts.public_jwk(ed_key))
        assert (await _get(api, jwts.token(rsa_key, {"compute_id": COMPUTE_ID})))[0] == 401


async def test_no_keys_refuses_external_requests(make_api: ApiFactory) -> None:
    async with make_api(allow_unauthenticated=False) as api:
        status, body = await _get(api, None)
        assert status == 401
        assert "--allow-unauthenticated" in body["error"]
        # The internal port needs no auth, and /metrics stays open.
        async with api.session.get(f"{api.internal}/status") as r:
            assert r.status == 200
        assert (await _get(api, None, path="/metrics"))[0] == 200


async def test_allow_unauthenticated_opens_the_api_without_keys(make_api: ApiFactory) -> None:
    async with make_api(allow_unauthenticated=True) as api:
        assert (await _get(api, None))[0] == 200


async def test_keys_win_over_allow_unauthenticated(make_api: ApiFactory, ed_key: OKPKey) -> None:
    async with make_api(allow_unauthenticated=True, compute_id=COMPUTE_ID) as api:
        _install(api, jwts.public_jwk(ed_key))
        assert (await _get(api, None))[0] == 400


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_open_paths_need_no_token(secured: Api, path: str) -> None:
    assert (await _get(secured, None, path=path))[0] in (200, 503)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/status"),
        ("POST", "/configure"),
        ("POST", "/terminate"),
        ("GET", "/metrics.json"),
        ("GET", "/dbs_and_roles"),
        ("GET", "/database_schema"),
        ("GET", "/insights"),
        ("POST", "/check_writability"),
    ],
)
async def test_every_other_external_route_needs_a_token(
    secured: Api, method: str, path: str
) -> None:
    async with secured.session.request(method, f"{secured.external}{path}") as r:
        assert r.status == 400
        assert "authorization" in (await r.json())["error"]
    async with secured.session.request(method, f"{secured.internal}{path}") as r:
        assert r.status not in (401, 403)


async def test_unknown_paths_are_404_before_auth(secured: Api) -> None:
    assert (await _get(secured, None, path="/nope"))[0] == 404


async def test_tokens_are_never_logged(
    secured: Api, ed_key: OKPKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [
        jwts.token(ed_key, {"compute_id": COMPUTE_ID}),
        jwts.token(ed_key, {"compute_id": "other"}),
        jwts.token(jwts.ed25519(), {"compute_id": COMPUTE_ID}),
        "not-a-jwt-but-secret",
    ]
    for token in tokens:
        _, body = await _get(secured, token)
        assert token not in str(body)
    for token in tokens:
        assert token not in caplog.text
