"""JWT authorization of the external HTTP port, as Neon's ``middleware/authorize.rs`` does it.

Rules (each answered with Neon's status code):

- no ``Authorization: Bearer <token>`` header, or an unparsable one: 400;
- a token no configured key verifies (bad signature, malformed, wrong algorithm): 401;
- ``exp`` in the past (60 s leeway, jsonwebtoken's default): 401; ``nbf`` is not checked;
- ``scope == "compute_ctl:admin"``: ``aud`` must contain ``"compute"``, else 401;
  any other scope value: 401 (Neon's claims struct rejects unknown scopes);
- otherwise ``compute_id`` must equal ``--compute-id``: missing or different, 403
  (so an empty claim set is 403).

Keys are ``compute_ctl_config.jwks`` (Ed25519 ``OKP`` keys for ``EdDSA``; ``RSA`` keys for
``RS256`` when a JWK declares ``alg: RS256``), each tried in turn. With no key at all the
external API refuses every request (401) unless ``--allow-unauthenticated`` was given.
``/metrics`` and the probes are open. Tokens are never logged or echoed.

This module owns verification only; the middleware that applies it is in ``app``.
joserfc (and with it ``cryptography``, a large import) is loaded when the first key is,
so a compute without keys never loads it and one with keys loads it off the start path.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import responses

if TYPE_CHECKING:
    from joserfc import jwk

__all__ = ["ADMIN_SCOPE", "COMPUTE_AUDIENCE", "Authorizer", "Claims"]

logger = logging.getLogger(__name__)

ADMIN_SCOPE = "compute_ctl:admin"
COMPUTE_AUDIENCE = "compute"
EXP_LEEWAY_SECONDS = 60
_CACHE_SIZE = 256

# Ed25519 tokens say "EdDSA" (RFC 8037, what Neon issues) or "Ed25519" (RFC 9864).
_OKP_ALGORITHMS = ("EdDSA", "Ed25519")


@dataclasses.dataclass(frozen=True)
class Claims:
    """The claims Neon's ``ComputeClaims`` reads; anything else in the token is ignored."""

    compute_id: str | None
    scope: str | None
    audience: tuple[str, ...] | None
    exp: float | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Claims:
        compute_id = raw.get("compute_id")
        scope = raw.get("scope")
        aud = raw.get("aud")
        exp = raw.get("exp")
        if compute_id is not None and not isinstance(compute_id, str):
            raise responses.ApiError(401, "invalid compute_id in authorization token claims")
        if scope is not None and scope != ADMIN_SCOPE:
            raise responses.ApiError(401, "invalid scope in authorization token claims")
        if isinstance(aud, str):
            aud = [aud]
        if aud is not None and not (isinstance(aud, list) and all(isinstance(a, str) for a in aud)):
            raise responses.ApiError(401, "invalid audience in authorization token claims")
        if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
            raise responses.ApiError(401, "invalid exp in authorization token claims")
        return cls(
            compute_id=compute_id,
            scope=scope,
            audience=tuple(aud) if aud is not None else None,
            exp=float(exp) if exp is not None else None,
        )


@dataclasses.dataclass(frozen=True)
class _Key:
    key: jwk.Key
    algorithms: tuple[str, ...]


def _load_keys(jwks: spec_mod.Jwks) -> list[_Key]:
    """Import every usable JWK; a key that cannot be imported is skipped with a warning."""
    if not jwks.keys:
        return []
    from joserfc import errors as jose_errors
    from joserfc import jwk

    keys = []
    for index, raw in enumerate(jwks.keys):
        label = raw.get("kid", f"#{index}")
        try:
            key = jwk.import_key(dict(raw))
        except (jose_errors.JoseError, ValueError, TypeError) as e:
            logger.warning("skipping JWK %s: %s", label, e)
            continue
        kty = raw.get("kty")
        if kty == "OKP" and raw.get("crv") == "Ed25519":
            keys.append(_Key(key=key, algorithms=_OKP_ALGORITHMS))
        elif kty == "RSA" and raw.get("alg") == "RS256":
            keys.append(_Key(key=key, algorithms=("RS256",)))
        else:
            logger.warning("skipping JWK %s: only Ed25519 (EdDSA) and RSA (RS256) keys", label)
    return keys


class Authorizer:
    """Verifies bearer tokens for one compute. Keys are read from the state's config once
    and re-read only if that config object is replaced.

    Accepted tokens are cached (verifying an Ed25519 signature costs more than serving
    ``/status``): at most ``_CACHE_SIZE`` entries, keyed by the exact token text (the whole
    ``Authorization`` value, so a hit costs one dictionary lookup), each
    holding the moment its ``exp`` (plus the leeway) passes; a hit after that moment is
    dropped and answered 401 as an uncached expired token would be. Only a token that
    passed every rule is stored, so a rejected one is verified (and rejected) again on
    every use; a new JWKS empties the cache.
    """

    def __init__(self, *, compute_id: str, allow_unauthenticated: bool) -> None:
        self.compute_id = compute_id
        self.allow_unauthenticated = allow_unauthenticated
        self._jwks: spec_mod.Jwks | None = None
        self._keys: list[_Key] = []
        # Accepted "Bearer <token>" -> (claims, the time.time() after which it has expired).
        self._accepted: collections.OrderedDict[str, tuple[Claims, float]] = (
            collections.OrderedDict()
        )

    @property
    def cached_tokens(self) -> int:
        return len(self._accepted)

    def _keys_for(self, jwks: spec_mod.Jwks) -> Sequence[_Key]:
        if jwks is not self._jwks:
            self._keys = _load_keys(jwks)
            self._jwks = jwks
            self._accepted.clear()
        return self._keys

    def check(self, *, authorization: str | None, jwks: spec_mod.Jwks) -> Claims | None:
        """Authorize one request; raise ``ApiError`` (400/401/403) or return the claims.

        Returns ``None`` when no key is configured and unauthenticated access is allowed.
        """
        if jwks is self._jwks and authorization is not None:
            hit = self._accepted.get(authorization)
            if hit is not None and time.time() <= hit[1]:
                return hit[0]
        keys = self._keys_for(jwks)
        if not keys:
            if self.allow_unauthenticated:
                return None
            raise responses.ApiError(
                401,
                "authorization is not configured: compute_ctl_config.jwks has no usable key "
                "(start with --allow-unauthenticated for an open development API)",
            )
        token = _bearer_token(authorization)
        assert authorization is not None
        hit = self._accepted.get(authorization)
        if hit is not None:  # the fast path above found it expired
            del self._accepted[authorization]
            raise responses.ApiError(401, "authorization token has expired")
        claims = Claims.parse(_verify(token, keys))
        expires = math.inf if claims.exp is None else claims.exp + EXP_LEEWAY_SECONDS
        if expires < time.time():
            raise responses.ApiError(401, "authorization token has expired")
        self._authorize(claims)
        self._accepted[authorization] = (claims, expires)
        if len(self._accepted) > _CACHE_SIZE:
            self._accepted.popitem(last=False)  # the oldest accepted token
        return claims

    def _authorize(self, claims: Claims) -> None:
        if claims.scope == ADMIN_SCOPE:
            if claims.audience is None:
                raise responses.ApiError(401, "missing audience in authorization token claims")
            if COMPUTE_AUDIENCE not in claims.audience:
                raise responses.ApiError(401, "invalid audience in authorization token claims")
            return
        if claims.compute_id is None:
            raise responses.ApiError(403, "missing compute_id in authorization token claims")
        if claims.compute_id != self.compute_id:
            raise responses.ApiError(403, "invalid compute ID in authorization token claims")


def _bearer_token(authorization: str | None) -> str:
    if authorization is None:
        raise responses.ApiError(400, "invalid authorization token: missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise responses.ApiError(400, "invalid authorization token: expected 'Bearer <token>'")
    return token


def _verify(token: str, keys: Sequence[_Key]) -> Mapping[str, Any]:
    """The token's claims if any key verifies its signature; 401 otherwise."""
    from joserfc import errors as jose_errors
    from joserfc import jwt

    for candidate in keys:
        try:
            with warnings.catch_warnings():
                # joserfc flags "EdDSA" as deprecated by RFC 9864; Neon still issues it.
                warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                token_data = jwt.decode(token, candidate.key, algorithms=candidate.algorithms)
        except (jose_errors.JoseError, ValueError, TypeError):
            continue
        claims: Mapping[str, Any] = token_data.claims
        return claims
    raise responses.ApiError(401, "failed to verify authorization token")
