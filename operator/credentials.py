"""The operator's credentials for compute_ctl's external API: short-lived signed JWTs.

The operator is a client like a control plane: every call carries
``Authorization: Bearer <JWT>`` with the claims compute_ctl checks (``compute_id``, and
``exp``), signed by a private key only the operator container can read (a Secret key
mounted into that container alone). compute_ctl trusts the matching public key through
its JWKS (``compute_ctl_config.jwks``). The key file is an Ed25519 private key in PEM
(signed ``EdDSA``, Neon's algorithm) or an RSA one (``RS256``; the public JWK must then
declare ``alg: RS256``). ``scripts/compute-keys`` makes both halves.

The file is re-read when its modification time changes, so a rotated Secret (the kubelet
updates mounted Secrets in place) is used without a restart. A token is reused until
half its lifetime is gone. Tokens are never logged.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["TokenError", "TokenSource"]

LIFETIME_SECONDS = 300.0


class TokenError(Exception):
    """The key file is missing or not a usable private key (the message says which)."""


@dataclasses.dataclass
class _Loaded:
    mtime_ns: int
    key: Any
    algorithm: str
    kid: str | None


class TokenSource:
    """Signs tokens for one compute with the private key in ``key_file``."""

    def __init__(
        self, key_file: Path, *, compute_id: str, lifetime: float = LIFETIME_SECONDS
    ) -> None:
        self.key_file = key_file
        self.compute_id = compute_id
        self.lifetime = lifetime
        self._loaded: _Loaded | None = None
        self._token: str | None = None
        self._expires = 0.0

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        loaded = self._load()
        now = time.time()
        if self._token is not None and now < self._expires - self.lifetime / 2:
            return self._token
        from joserfc import errors as jose_errors
        from joserfc import jwt

        header: dict[str, Any] = {"alg": loaded.algorithm}
        if loaded.kid:
            header["kid"] = loaded.kid
        claims = {"compute_id": self.compute_id, "iat": int(now), "exp": int(now + self.lifetime)}
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as deprecated by RFC 9864; Neon's compute_ctl wants it.
            warnings.simplefilter("ignore", jose_errors.SecurityWarning)
            self._token = jwt.encode(header, claims, loaded.key, algorithms=[loaded.algorithm])
        self._expires = now + self.lifetime
        return self._token

    def _load(self) -> _Loaded:
        try:
            mtime = self.key_file.stat().st_mtime_ns
        except OSError as exc:
            raise TokenError(f"the operator's key {self.key_file}: {exc.strerror}") from exc
        if self._loaded is not None and self._loaded.mtime_ns == mtime:
            return self._loaded
        from joserfc import errors as jose_errors
        from joserfc import jwk

        try:
            with warnings.catch_warnings():  # the type is read from the PEM, then checked
                warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                key = jwk.import_key(self.key_file.read_bytes())
        except Exception as exc:  # joserfc raises several types for a bad file
            raise TokenError(
                f"the operator's key {self.key_file} is not a PEM private key"
            ) from exc
        kty = key.key_type
        if kty == "OKP" and key.as_dict().get("crv") == "Ed25519":
            algorithm = "EdDSA"
        elif kty == "RSA":
            algorithm = "RS256"
        else:
            raise TokenError(f"the operator's key {self.key_file}: Ed25519 or RSA only")
        if not key.is_private:
            raise TokenError(f"the operator's key {self.key_file} is a public key")
        self._loaded = _Loaded(mtime, key, algorithm, key.thumbprint())
        self._token = None
        return self._loaded
