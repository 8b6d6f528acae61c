"""Keys and tokens for the auth tests, made with joserfc as a control plane would."""

from __future__ import annotations

import time
import warnings
from typing import Any

from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import OKPKey, RSAKey


def ed25519() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def rsa() -> RSAKey:
    return RSAKey.generate_key(2048)


def public_jwk(key: OKPKey | RSAKey, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(key.as_dict(private=False))
    jwk.update(extra)
    return jwk


def token(key: OKPKey | RSAKey, claims: dict[str, Any], *, alg: str | None = None) -> str:
    alg = alg or ("EdDSA" if isinstance(key, OKPKey) else "RS256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jose_errors.SecurityWarning)
        return jwt.encode({"alg": alg}, claims, key, algorithms=[alg])


def in_an_hour() -> int:
    return int(time.time()) + 3600
