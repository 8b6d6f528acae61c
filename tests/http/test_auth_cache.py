"""The verified-token cache: it saves signature checks and changes no answer.

Each test runs the same sequence of requests through one long-lived ``Authorizer`` (the
cache in use) and through a fresh ``Authorizer`` per request (no cache at all), and
asserts the answers are identical: expiry, key rotation, tampering and rejected tokens
behave exactly as without the cache.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import auth, responses
from tests.support import jwts

COMPUTE_ID = "compute-under-test"


def _jwks(*keys: OKPKey) -> spec_mod.Jwks:
    return spec_mod.Jwks(keys=[jwts.public_jwk(k) for k in keys])


def _answer(authorizer: auth.Authorizer, token: str, jwks: spec_mod.Jwks) -> object:
    try:
        return authorizer.check(authorization=f"Bearer {token}", jwks=jwks)
    except responses.ApiError as e:
        return (e.status, e.message)


class _Both:
    """One cached authorizer and, for comparison, a cache-less answer for every call."""

    def __init__(self) -> None:
        self.cached = auth.Authorizer(compute_id=COMPUTE_ID, allow_unauthenticated=False)

    def answer(self, token: str, jwks: spec_mod.Jwks) -> object:
        fresh = auth.Authorizer(compute_id=COMPUTE_ID, allow_unauthenticated=False)
        uncached = _answer(fresh, token, jwks)
        got = _answer(self.cached, token, jwks)
        assert got == uncached
        return got


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token whose signature is checked."""
    seen: list[str] = []
    real = auth._verify

    def counting(token: str, keys: Any) -> Any:
        seen.append(token)
        return real(token, keys)

    monkeypatch.setattr(auth, "_verify", counting)
    return seen


def test_an_accepted_token_is_verified_once(verifications: list[str]) -> None:
    key = jwts.ed25519()
    jwks = _jwks(key)
    authorizer = auth.Authorizer(compute_id=COMPUTE_ID, allow_unauthenticated=False)
    token = jwts.token(key, {"compute_id": COMPUTE_ID, "exp": jwts.in_an_hour()})
    for _ in range(5):
        claims = authorizer.check(authorization=f"Bearer {token}", jwks=jwks)
        assert claims is not None
        assert claims.compute_id == COMPUTE_ID
    assert verifications == [token]


def test_expiry_ends_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    key = jwts.ed25519()
    jwks = _jwks(key)
    both = _Both()
    exp = int(time.time()) + 3600
    token = jwts.token(key, {"compute_id": COMPUTE_ID, "exp": exp})
    assert isinstance(both.answer(token, jwks), auth.Claims)
    # Up to exp plus the leeway the token is still good, cached or not...
    monkeypatch.setattr(time, "time", lambda: exp + auth.EXP_LEEWAY_SECONDS - 0.5)
    assert isinstance(both.answer(token, jwks), auth.Claims)
    # ...and not one moment after, and the entry is gone.
    monkeypatch.setattr(time, "time", lambda: exp + auth.EXP_LEEWAY_SECONDS + 0.5)
    assert both.answer(token, jwks) == (401, "authorization token has expired")
    assert both.cached.cached_tokens == 0
    assert both.answer(token, jwks) == (401, "authorization token has expired")


def test_key_rotation_drops_the_cache(verifications: list[str]) -> None:
    old, new = jwts.ed25519(), jwts.ed25519()
    both = _Both()
    old_token = jwts.token(old, {"compute_id": COMPUTE_ID})
    new_token = jwts.token(new, {"compute_id": COMPUTE_ID})
    assert isinstance(both.answer(old_token, _jwks(old)), auth.Claims)
    assert both.answer(new_token, _jwks(old)) == (401, "failed to verify authorization token")
    # Rotated: the cached token of the retired key is refused at once.
    assert both.answer(old_token, _jwks(new)) == (401, "failed to verify authorization token")
    assert isinstance(both.answer(new_token, _jwks(new)), auth.Claims)
    # An equal JWKS in a new config object is a new JWKS too: verified again, accepted.
    before = verifications.count(new_token)
    assert isinstance(both.answer(new_token, _jwks(new)), auth.Claims)
    assert verifications.count(new_token) == before + 2  # the cached and the fresh one


def test_a_tampered_token_is_refused_after_the_original_was_cached() -> None:
    key = jwts.ed25519()
    jwks = _jwks(key)
    both = _Both()
    token = jwts.token(key, {"compute_id": COMPUTE_ID})
    assert isinstance(both.answer(token, jwks), auth.Claims)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    forged_payload = jwts.token(jwts.ed25519(), {"compute_id": "someone-else"}).split(".")[1]
    for tampered in (
        f"{header}.{payload}.{flipped}",
        f"{header}.{forged_payload}.{signature}",
        token + "x",
        token[:-1],
    ):
        assert both.answer(tampered, jwks) == (401, "failed to verify authorization token")
        assert both.answer(tampered, jwks) == (401, "failed to verify authorization token")
    assert isinstance(both.answer(token, jwks), auth.Claims)


def test_a_rejected_token_is_never_cached(verifications: list[str]) -> None:
    key = jwts.ed25519()
    jwks = _jwks(key)
    both = _Both()
    rejected = [
        jwts.token(key, {"compute_id": "someone-else"}),  # 403
        jwts.token(key, {}),  # 403
        jwts.token(key, {"compute_id": COMPUTE_ID, "exp": int(time.time()) - 3600}),  # 401
        jwts.token(key, {"scope": "compute_ctl:admin", "aud": ["other"]}),  # 401
        jwts.token(jwts.ed25519(), {"compute_id": COMPUTE_ID}),  # 401, another key
    ]
    for token in rejected:
        first = both.answer(token, jwks)
        assert isinstance(first, tuple)
        assert first[0] in (401, 403)
        assert both.answer(token, jwks) == first
    assert both.cached.cached_tokens == 0
    # Each rejected token was verified afresh each time, by both authorizers.
    assert all(verifications.count(token) == 4 for token in rejected)


def test_the_cache_is_bounded() -> None:
    key = jwts.ed25519()
    jwks = _jwks(key)
    authorizer = auth.Authorizer(compute_id=COMPUTE_ID, allow_unauthenticated=False)
    tokens = [
        jwts.token(key, {"compute_id": COMPUTE_ID, "n": n}) for n in range(auth._CACHE_SIZE + 20)
    ]
    for token in tokens:
        assert authorizer.check(authorization=f"Bearer {token}", jwks=jwks) is not None
    assert authorizer.cached_tokens == auth._CACHE_SIZE
    # Evicted tokens are still accepted (verified again), as without the cache.
    assert authorizer.check(authorization=f"Bearer {tokens[0]}", jwks=jwks) is not None
