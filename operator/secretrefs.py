"""Credentials by reference: ``spec.credentials`` of a ``ComputeSpec`` and their resolution.

The resource never holds a password. ``spec.credentials`` names Secret keys, in the
shape of a container's ``env[].valueFrom.secretKeyRef``, and the operator puts their
values into the ComputeSpec it pushes to compute_ctl, at every reconcile::

    spec:
      computeSpec: {cluster: {roles: [{name: app}], ...}, ...}
      credentials:
        roles:
          - name: app                     # a role of computeSpec.cluster.roles
            passwordFrom:
              secretKeyRef: {name: compute-1-credentials, key: app}
        storageAuthTokenFrom:             # -> computeSpec.storage_auth_token
          secretKeyRef: {name: compute-1-credentials, key: storage-token}
        endpointStorageTokenFrom:         # -> computeSpec.endpoint_storage_token
          secretKeyRef: {name: compute-1-credentials, key: endpoint-storage-token}

A password value is cleartext, SCRAM-encoded here (``scram``; the salt comes from the
Secret's uid and resourceVersion, so an unchanged Secret gives an unchanged spec hash),
or already a verifier: ``SCRAM-SHA-256$...`` or ``md5`` + 32 hex digits pass through (as
in CloudNativePG). Values are used byte for byte (no trimming of a trailing newline).

``resolve`` is pure: the caller reads the Secrets (``kubesecrets``) and hands them over.
Nothing here puts a value into an error message: messages name Secrets, keys and roles.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import pydantic

from compute_ctl.operator import scram, status

__all__ = [
    "FIELD",
    "Credentials",
    "InvalidReference",
    "Secret",
    "SecretKeyMissing",
    "SecretUnavailable",
    "parse",
    "resolve",
]

FIELD = "credentials"
"""Where the references sit in the resource's ``spec``."""

_MD5 = re.compile(r"md5[0-9a-f]{32}")


class _Camel(status.CamelModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # a typo is an error, not ignored


class SecretKeySelector(_Camel):
    """A key of a Secret in the resource's namespace."""

    name: str = pydantic.Field(min_length=1, description="The Secret's name.")
    key: str = pydantic.Field(min_length=1, description="The key in the Secret's data.")


class ValueFrom(_Camel):
    """Where a value comes from (as a container's ``env[].valueFrom``)."""

    secret_key_ref: SecretKeySelector


class RolePassword(_Camel):
    """A role's password, from a Secret key."""

    name: str = pydantic.Field(
        min_length=1, description="A role of computeSpec.cluster.roles (without a password)."
    )
    password_from: ValueFrom = pydantic.Field(
        description=(
            "Cleartext (SCRAM-encoded by the operator), or a verifier: SCRAM-SHA-256$... "
            "or md5 followed by 32 hex digits."
        )
    )


class Credentials(_Camel):
    """Secret keys the operator puts into the ComputeSpec it pushes (never stored here)."""

    roles: list[RolePassword] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    storage_auth_token_from: ValueFrom | None = pydantic.Field(
        default=None, description="Sets computeSpec.storage_auth_token."
    )
    endpoint_storage_token_from: ValueFrom | None = pydantic.Field(
        default=None, description="Sets computeSpec.endpoint_storage_token."
    )

    def secret_names(self) -> list[str]:
        """The Secrets to read, each once, in order of first mention."""
        names = [r.password_from.secret_key_ref.name for r in self.roles]
        for ref in (self.storage_auth_token_from, self.endpoint_storage_token_from):
            if ref is not None:
                names.append(ref.secret_key_ref.name)
        return list(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class Secret:
    """The parts of a Secret the resolution needs (``data`` base64, as the API sends it)."""

    name: str
    uid: str
    resource_version: str
    data: Mapping[str, str] = dataclasses.field(repr=False)  # the values: never shown


class InvalidReference(ValueError):
    """``spec.credentials`` is malformed or contradicts ``spec.computeSpec``."""


class SecretUnavailable(Exception):
    """A referenced Secret could not be read; the message names it and says why."""

    def __init__(self, message: str, *, not_found: bool = False, forbidden: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.forbidden = forbidden


class SecretKeyMissing(LookupError):
    """A referenced key is absent, empty or not text; the message names it (never a value)."""


def parse(spec: Mapping[str, Any]) -> Credentials:
    raw = spec.get(FIELD)
    if raw is None:
        return Credentials()
    try:
        return Credentials.model_validate(raw)
    except pydantic.ValidationError as e:
        where = "; ".join(
            f"spec.{FIELD}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
            for item in e.errors(include_url=False)
        )
        raise InvalidReference(where) from None


def resolve(
    compute_spec: Mapping[str, Any],
    credentials: Credentials,
    secrets: Mapping[str, Secret],
) -> dict[str, Any]:
    """A copy of ``compute_spec`` with the referenced values in place.

    ``secrets``: every Secret of ``credentials.secret_names()``, by name.
    """
    resolved = copy.deepcopy(dict(compute_spec))
    cluster = resolved.get("cluster")
    roles = cluster.get("roles") if isinstance(cluster, Mapping) else None
    by_name = {
        r.get("name"): r for r in (roles if isinstance(roles, list) else []) if isinstance(r, dict)
    }
    seen: set[str] = set()
    for entry in credentials.roles:
        where = f"spec.{FIELD}.roles[{entry.name}]"
        if entry.name in seen:
            raise InvalidReference(f"{where}: role named twice")
        seen.add(entry.name)
        role = by_name.get(entry.name)
        if role is None:
            raise InvalidReference(f"{where}: no such role in spec.computeSpec.cluster.roles")
        if role.get("encrypted_password") is not None:
            raise InvalidReference(
                f"{where}: the role also has an encrypted_password in spec.computeSpec"
            )
        ref = entry.password_from.secret_key_ref
        secret = _secret(secrets, ref.name)
        role["encrypted_password"] = _password(_value(secret, ref.key), secret=secret, key=ref.key)
    for field, source in (
        ("storage_auth_token", credentials.storage_auth_token_from),
        ("endpoint_storage_token", credentials.endpoint_storage_token_from),
    ):
        if source is None:
            continue
        if resolved.get(field) is not None:
            raise InvalidReference(
                f"spec.{FIELD}: {field} is set in spec.computeSpec too (a value in the "
                "resource): remove it there"
            )
        ref = source.secret_key_ref
        resolved[field] = _value(_secret(secrets, ref.name), ref.key)
    return resolved


def _secret(secrets: Mapping[str, Secret], name: str) -> Secret:
    try:
        return secrets[name]
    except KeyError:
        raise SecretKeyMissing(f"Secret {name!r} was not read") from None


def _value(secret: Secret, key: str) -> str:
    encoded = secret.data.get(key)
    if encoded is None:
        raise SecretKeyMissing(f"Secret {secret.name!r} has no key {key!r}")
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise SecretKeyMissing(f"key {key!r} of Secret {secret.name!r} is not UTF-8 text") from None
    if not text:
        raise SecretKeyMissing(f"key {key!r} of Secret {secret.name!r} is empty")
    return text


def _password(value: str, *, secret: Secret, key: str) -> str:
    """Neon's ``encrypted_password`` for a Secret's value."""
    if value.startswith("SCRAM-SHA-256$"):
        return value  # a verifier: compute_ctl's admission checks its form
    if _MD5.fullmatch(value):
        return value[3:]  # Neon's spec form of an md5 verifier: the bare hex
    identity = "\0".join((secret.uid, secret.resource_version, secret.name, key))
    salt = hashlib.sha256(identity.encode()).digest()[: scram.SALT_BYTES]
    return scram.verifier(value, salt=salt)
