"""Credentials by reference (``spec.credentials``): parsing, resolution, SCRAM encoding.

Pure: the Secrets are values here; the real-API tier reads real ones
(tests/apiserver/test_secrets.py).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from compute_ctl.compute import admission
from compute_ctl.operator import resource, scram, secretrefs

# Verifiers PostgreSQL 15 stored for these passwords (CREATE ROLE ... PASSWORD with
# password_encryption = scram-sha-256): ASCII, SASLprep's NFKC and space mapping, and
# an ASCII control character (kept as is).
POSTGRES_MADE = {
    "pencil": "SCRAM-SHA-256$4096:kZJhZyjrI5yTejq994Q6TQ==$Mt3j6Ce+2/S5jLjQd9FIT9up443feth/X+c4sg8viT4=:VxDxZ0AlkKLhXI3qWN/m9VLRurAiU85xmB1W6jXHCEI=",  # noqa: E501
    "pässwörd": "SCRAM-SHA-256$4096:k5SAo9eHsefui1cmFUqmhQ==$1qcao7pJEBlfpF7CTzJkVeF5selyUzUEleh3+AKiC6c=:ViObO1EFp5ea1rrVMPuFBv95E3ZrFUcLD32Uz2DuJ/I=",  # noqa: E501
    "x\u00a0y": "SCRAM-SHA-256$4096:ahG8bX3O1orUsHU3+U7mXg==$HPBIxL5Ayc6/kcJ0EmFsDuV8De50zPWJRrEAxxJuM94=:yBXCiEVPG4+L84BIntrxvLaa1h2cT7/xwNahhikm0dk=",  # noqa: E501
    "\u2168": "SCRAM-SHA-256$4096:VXxKEghXbZRJf/mdC4qoxg==$CareYWdktjOrJ27vBxA8+pQWeGXWHNeBtCueqOnEVv8=:y6i8HtxfUZeqs8SHBg34AYIN3INNEOLSVSFv+BnYi0I=",  # noqa: E501
    "a\u0007b": "SCRAM-SHA-256$4096:/zD93mxEXiMbheRt91GBuQ==$76l8jh6L7TYUic0WGqgL9hXODHioW9Wi5sMIOx1TO4E=:ltCeujAxymeki6Z9L/QtwaMow2e11Eo0jhpsVwMI9Os=",  # noqa: E501
}


@pytest.mark.parametrize("password", sorted(POSTGRES_MADE))
def test_verifier_equals_postgres(password: str) -> None:
    expected = POSTGRES_MADE[password]
    salt = base64.b64decode(expected.split("$")[1].split(":")[1])
    assert scram.verifier(password, salt=salt) == expected


def _secret(data: dict[str, str], *, version: str = "1") -> secretrefs.Secret:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return secretrefs.Secret(name="creds", uid="u-1", resource_version=version, data=encoded)


def _spec(**extra: Any) -> dict[str, Any]:
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {"roles": [{"name": "app"}, {"name": "other"}], "databases": []},
        **extra,
    }


def _ref(key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": "creds", "key": key}}


CREDS = {
    "roles": [{"name": "app", "passwordFrom": _ref("app")}],
    "storageAuthTokenFrom": _ref("token"),
    "endpointStorageTokenFrom": _ref("endpoint"),
}


def _view(credentials: Any, compute_spec: dict[str, Any] | None = None) -> resource.ResourceView:
    spec = {"computeSpec": compute_spec or _spec(), "credentials": credentials}
    return resource.ResourceView(None, "c", 1, spec, {})


def test_resolve_puts_values_into_the_pushed_spec_only() -> None:
    view = _view(CREDS)
    secret = _secret({"app": "pw-1", "token": "jwt-a", "endpoint": "jwt-b"})
    admitted = view.compute_spec(admission.Rules(), {"creds": secret})
    role = next(r for r in admitted.spec.cluster.roles if r.name == "app")
    assert role.encrypted_password is not None
    assert role.encrypted_password.startswith("SCRAM-SHA-256$4096:")
    assert admitted.spec.storage_auth_token == "jwt-a"
    assert admitted.spec.endpoint_storage_token == "jwt-b"
    assert "encrypted_password" not in view.spec["computeSpec"]["cluster"]["roles"][0]
    # Same Secret version, same verifier and hash; a rotated one, a new salt.
    again = view.compute_spec(admission.Rules(), {"creds": secret})
    assert again.hash == admitted.hash
    rotated = _secret({"app": "pw-1", "token": "jwt-a", "endpoint": "jwt-b"}, version="2")
    assert view.compute_spec(admission.Rules(), {"creds": rotated}).hash != admitted.hash


def test_verifiers_in_a_secret_pass_through() -> None:
    md5 = hashlib.md5(b"pwapp").hexdigest()  # noqa: S324
    scram_verifier = POSTGRES_MADE["pencil"]
    for value, stored in ((f"md5{md5}", md5), (scram_verifier, scram_verifier)):
        view = _view({"roles": [{"name": "app", "passwordFrom": _ref("app")}]})
        admitted = view.compute_spec(admission.Rules(), {"creds": _secret({"app": value})})
        assert admitted.spec.cluster.roles[0].encrypted_password == stored


@pytest.mark.parametrize(
    ("credentials", "compute_spec", "message"),
    [
        ({"roles": [{"name": "ghost", "passwordFrom": _ref("app")}]}, None, "no such role"),
        (
            {"roles": [{"name": "app", "passwordFrom": _ref("app")}]},
            _spec(cluster={"roles": [{"name": "app", "encrypted_password": "0" * 32}]}),
            "also has an encrypted_password",
        ),
        ({"storageAuthTokenFrom": _ref("token")}, _spec(storage_auth_token="inline"), "too"),
        ({"roles": [{"name": "app"}]}, None, "passwordFrom"),
        (
            {"roles": [{"name": "app", "passwordFrom": {"secretKeyRef": {"name": "x"}}}]},
            None,
            "key",
        ),
    ],
)
def test_contradictions_are_invalid(
    credentials: Any, compute_spec: dict[str, Any] | None, message: str
) -> None:
    view = _view(credentials, compute_spec)
    secret = _secret({"app": "pw", "token": "t"})
    with pytest.raises(resource.InvalidSpec, match=message):
        view.compute_spec(admission.Rules(), {"creds": secret})


@pytest.mark.parametrize(
    ("data", "message"),
    [({}, "has no key 'app'"), ({"app": ""}, "is empty")],
)
def test_a_missing_or_empty_key_names_it_and_no_value(data: dict[str, str], message: str) -> None:
    view = _view({"roles": [{"name": "app", "passwordFrom": _ref("app")}]})
    with pytest.raises(secretrefs.SecretKeyMissing, match=message):
        view.compute_spec(admission.Rules(), {"creds": _secret(data)})


def test_secret_names_are_read_once_each() -> None:
    assert secretrefs.parse({"credentials": CREDS}).secret_names() == ["creds"]
    assert secretrefs.parse({}).secret_names() == []
