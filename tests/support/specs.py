"""Spec builders: the local-mode spec a real compute starts from, and SCRAM verifiers."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

__all__ = ["local_spec", "scram"]


@functools.cache
def scram(password: str, *, salt: bytes = b"core-tests-salt!") -> str:
    """A SCRAM-SHA-256 verifier, as the control plane sends them."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server_key)}"


def local_spec(
    *,
    port: int,
    roles: Sequence[str] = (),
    databases: Sequence[tuple[str, str]] = (),
    settings: Sequence[tuple[str, str, str]] = (),
    password: str | None = None,
) -> dict[str, Any]:
    """A local-mode spec (no Neon storage) for a postgres on ``127.0.0.1:port``, small and
    fast (no fsync, 16MB of shared buffers, 40 connections); ``roles`` get ``password``'s
    verifier, ``databases`` are ``(name, owner)``; ``settings`` ``(name, value, vartype)``."""
    verifier = scram(password) if password is not None else None
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "roles": [{"name": r, "encrypted_password": verifier} for r in roles],
            "databases": [{"name": d, "owner": o} for d, o in databases],
            "settings": [
                {"name": "port", "value": str(port), "vartype": "integer"},
                {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
                {"name": "fsync", "value": "off", "vartype": "bool"},
                {"name": "shared_buffers", "value": "16MB", "vartype": "string"},
                {"name": "max_connections", "value": "40", "vartype": "integer"},
                *({"name": n, "value": v, "vartype": t} for n, v, t in settings),
            ],
        },
    }
