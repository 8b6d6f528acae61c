"""SCRAM-SHA-256 verifiers as PostgreSQL stores them, made from a cleartext password.

A role's password in a Secret is usually cleartext; compute_ctl's spec carries a verifier
(Neon's ``encrypted_password``), so the operator encodes it, as CloudNativePG's operator
does. The output is what ``pg_authid.rolpassword`` holds:
``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802, RFC 7677).

The salt is a parameter, not drawn at random: the reconciler derives it from the Secret's
identity (its uid and resourceVersion), so the same Secret always gives the same verifier
and the same spec hash (no push on every reconcile), and a rotated Secret a new salt.
The password is prepared as PostgreSQL does (``pg_saslprep``): SASLprep (RFC 4013) when
it succeeds, the raw UTF-8 bytes otherwise.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

__all__ = ["ITERATIONS", "SALT_BYTES", "verifier"]

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SALT_BYTES = 16  # PostgreSQL's SCRAM_DEFAULT_SALT_LEN


def verifier(password: str, *, salt: bytes, iterations: int = ITERATIONS) -> str:
    if not salt:
        raise ValueError("an empty salt")
    salted = hashlib.pbkdf2_hmac("sha256", _prepare(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _prepare(password: str) -> bytes:
    """PostgreSQL's ``pg_saslprep``: the SASLprep'd password, or the raw bytes if that fails."""
    raw = password.encode("utf-8")
    if password.isascii():
        # pg_saslprep returns pure ASCII unchanged (control characters included).
        return raw
    prepared = _saslprep(password)
    return raw if prepared is None else prepared.encode("utf-8")


def _saslprep(text: str) -> str | None:
    """RFC 4013; ``None`` where PostgreSQL's ``pg_saslprep`` would fail (prohibited output,
    bad bidirectional text, unassigned code points, an empty result)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return None
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(ch) for ch in normal for check in prohibited):
        return None
    if any(stringprep.in_table_d1(ch) for ch in normal):
        if any(stringprep.in_table_d2(ch) for ch in normal):
            return None
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            return None
    return normal
