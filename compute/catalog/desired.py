"""The desired catalog, normalised from a ``ComputeSpec`` and validated.

Turns Neon's loosely typed pieces (``GenericOption`` role and database options, bare
md5 hashes, delta operations) into closed, typed values, and rejects what PostgreSQL
would silently mangle (names over 63 bytes, passwords it would re-hash as plain text,
reserved role names) with a ``ConfigError`` before anything is touched. Option names
are matched against a whitelist, so no text from the spec ever becomes SQL syntax.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime
import re
from collections.abc import Iterable
from typing import Literal

from compute_ctl.compute import errors, spec

__all__ = [
    "DbOption",
    "Delta",
    "Desired",
    "DesiredDatabase",
    "DesiredRole",
    "RoleAttrs",
    "from_spec",
    "stored_password",
    "validate_name",
]

NAMEDATALEN = 64
ROLE_FLAGS = ("superuser", "createdb", "createrole", "inherit", "login", "replication", "bypassrls")
_RESERVED_ROLES = frozenset({"public", "none"})
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
_SCRAM_KEY_LEN = 32

_ROLE_FLAG_OPTIONS: dict[str, tuple[str, bool]] = {}
for _flag in ROLE_FLAGS:
    _ROLE_FLAG_OPTIONS[_flag.upper()] = (_flag, True)
    _ROLE_FLAG_OPTIONS["NO" + _flag.upper()] = (_flag, False)

DbValueKind = Literal["str", "int", "bool"]
_DB_OPTIONS: dict[str, DbValueKind] = {
    "TEMPLATE": "str",
    "ENCODING": "str",
    "LOCALE": "str",
    "LC_COLLATE": "str",
    "LC_CTYPE": "str",
    "ICU_LOCALE": "str",
    "LOCALE_PROVIDER": "str",
    "COLLATION_VERSION": "str",
    "TABLESPACE": "str",
    "STRATEGY": "str",
    "ALLOW_CONNECTIONS": "bool",
    "CONNECTION LIMIT": "int",
    "IS_TEMPLATE": "bool",
}
_TRUE = frozenset({"true", "on", "yes", "y", "t", "1"})
_FALSE = frozenset({"false", "off", "no", "n", "f", "0"})


def _keyword(name: str) -> str:
    return " ".join(name.upper().split())


def validate_name(kind: str, name: str) -> None:
    """PostgreSQL truncates identifiers to 63 bytes; we refuse instead of drifting."""
    if not name:
        raise errors.ConfigError(f"{kind} name must not be empty")
    if "\x00" in name:
        raise errors.ConfigError(f"{kind} name {name!r} contains a NUL character")
    if len(name.encode()) >= NAMEDATALEN:
        raise errors.ConfigError(
            f"{kind} name {name!r} is {len(name.encode())} bytes; PostgreSQL allows "
            f"at most {NAMEDATALEN - 1}"
        )


def _validate_role_name(name: str, *, privileged_role: str) -> None:
    validate_name("role", name)
    if name.startswith("pg_") or name in _RESERVED_ROLES:
        raise errors.ConfigError(f"role name {name!r} is reserved by PostgreSQL")
    if name == privileged_role:
        raise errors.ConfigError(f"role name {name!r} is the privileged role")


@dataclasses.dataclass(frozen=True)
class RoleAttrs:
    """Role attributes; ``None`` means "not specified, leave as is"."""

    superuser: bool | None = None
    createdb: bool | None = None
    createrole: bool | None = None
    inherit: bool | None = None
    login: bool | None = None
    replication: bool | None = None
    bypassrls: bool | None = None
    connlimit: int | None = None
    valid_until: str | None = None
    """ISO-8601 in UTC, or ``infinity`` / ``-infinity``."""

    def merged_over(self, base: RoleAttrs) -> RoleAttrs:
        """These attributes, with ``base`` filling the unspecified ones."""
        values = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(base, f.name)
            for f in dataclasses.fields(self)
        }
        return RoleAttrs(**values)


# Neon's CREATE ROLE for console roles: INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION.
CONSOLE_ROLE_DEFAULTS = RoleAttrs(
    inherit=True, createrole=True, createdb=True, bypassrls=True, replication=True
)


@dataclasses.dataclass(frozen=True)
class DesiredRole:
    name: str
    attrs: RoleAttrs
    """The attributes the spec asks for (LOGIN unless it says NOLOGIN); enforced always."""
    password: str | None
    """The value ``pg_authid.rolpassword`` must hold: a SCRAM verifier or ``md5`` + hash."""
    plain: bool = False
    """A local_proxy JWT role: created without Neon's defaults and privileged membership."""


@dataclasses.dataclass(frozen=True)
class DbOption:
    keyword: str
    """A canonical keyword from the whitelist, e.g. ``CONNECTION LIMIT``."""
    value: str | int | bool


@dataclasses.dataclass(frozen=True)
class DesiredDatabase:
    name: str
    owner: str
    create_options: tuple[DbOption, ...] = ()
    connlimit: int | None = None
    allow_connections: bool | None = None
    is_template: bool | None = None


@dataclasses.dataclass(frozen=True)
class Delta:
    action: Literal["delete_db", "rename_db", "delete_role", "rename_role"]
    name: str
    new_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Desired:
    privileged_role: str
    roles: tuple[DesiredRole, ...]
    databases: tuple[DesiredDatabase, ...]
    deltas: tuple[Delta, ...]
    drop_subscriptions_before_start: bool = False
    timeline_id: str = ""
    """The compute's timeline (``""`` without Neon storage): the subscription drop is
    done once per timeline, as Neon records it in ``neon.drop_subscriptions_done``."""

    def deltas_of(self, action: str) -> tuple[Delta, ...]:
        return tuple(d for d in self.deltas if d.action == action)

    @property
    def deleted_roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.name for d in self.deltas_of("delete_role")))


def stored_password(role: spec.Role) -> str | None:
    """What ``pg_authid.rolpassword`` holds once Neon's rendering is applied.

    A value starting with ``SCRAM-SHA-256`` is a verifier, stored verbatim; anything
    else is a bare md5 hash, stored as ``md5`` + hash. Values PostgreSQL would not
    recognise as hashed (and would re-hash as a plain-text password, so that the
    stored value never matches) are refused.
    """
    value = role.encrypted_password
    if value is None:
        return None
    if value.startswith("SCRAM-SHA-256"):
        if not _valid_scram(value):
            raise errors.ConfigError(
                f"role {role.name!r}: encrypted_password is not a valid SCRAM-SHA-256 "
                "verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
            )
        return value
    if not _MD5_RE.fullmatch(value):
        raise errors.ConfigError(
            f"role {role.name!r}: encrypted_password must be a SCRAM-SHA-256 verifier "
            "or an md5 hash of 32 hex digits"
        )
    return "md5" + value.lower()


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _valid_scram(value: str) -> bool:
    parts = value.split("$")
    if len(parts) != 3 or parts[0] != "SCRAM-SHA-256":
        return False
    iterations, _, salt = parts[1].partition(":")
    stored, _, server = parts[2].partition(":")
    if not iterations.isdigit() or int(iterations) <= 0:
        return False
    salt_bytes, stored_bytes, server_bytes = _b64(salt), _b64(stored), _b64(server)
    return (
        bool(salt_bytes)
        and stored_bytes is not None
        and server_bytes is not None
        and len(stored_bytes) == _SCRAM_KEY_LEN
        and len(server_bytes) == _SCRAM_KEY_LEN
    )


def _parse_bool(where: str, value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.ConfigError(f"{where}: expected a boolean, got {value!r}")


def _parse_int(where: str, value: str | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        raise errors.ConfigError(f"{where}: expected an integer, got {value!r}") from None


_INT4_MAX = 2**31 - 1


def _parse_connlimit(where: str, value: str | None) -> int:
    """PostgreSQL takes -1 (no limit) up to int4's maximum; anything else it refuses."""
    limit = _parse_int(where, value)
    if not -1 <= limit <= _INT4_MAX:
        raise errors.ConfigError(f"{where}: {limit} is out of range [-1, {_INT4_MAX}]")
    return limit


def normalise_valid_until(where: str, value: str | None) -> str:
    """ISO-8601 (naive means UTC, as our sessions run with TimeZone=UTC) or infinity."""
    text = (value or "").strip()
    if text.lower() in ("infinity", "-infinity"):
        return text.lower()
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise errors.ConfigError(
            f"{where}: VALID UNTIL must be an ISO-8601 timestamp or 'infinity', got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat()


def parse_role_options(name: str, options: Iterable[spec.GenericOption]) -> RoleAttrs:
    values: dict[str, bool | int | str] = {}
    for option in options:
        keyword = _keyword(option.name)
        where = f"role {name!r}: option {option.name!r}"
        if keyword in _ROLE_FLAG_OPTIONS:
            if option.value is not None:
                raise errors.ConfigError(f"{where} takes no value")
            field, enabled = _ROLE_FLAG_OPTIONS[keyword]
        elif keyword == "CONNECTION LIMIT":
            values["connlimit"] = _parse_connlimit(where, option.value)
            continue
        elif keyword == "VALID UNTIL":
            values["valid_until"] = normalise_valid_until(where, option.value)
            continue
        else:
            raise errors.ConfigError(
                f"{where} is not a supported role option (supported: "
                "[NO]SUPERUSER, [NO]CREATEDB, [NO]CREATEROLE, [NO]INHERIT, [NO]LOGIN, "
                "[NO]REPLICATION, [NO]BYPASSRLS, CONNECTION LIMIT, VALID UNTIL)"
            )
        if field in values and values[field] != enabled:
            raise errors.ConfigError(f"{where} conflicts with an earlier option")
        values[field] = enabled
    attrs = RoleAttrs(**values)  # type: ignore[arg-type]
    if attrs.login is None:
        attrs = dataclasses.replace(attrs, login=True)  # Neon always renders LOGIN
    return attrs


def parse_database_options(name: str, options: Iterable[spec.GenericOption]) -> DesiredDatabase:
    parsed: list[DbOption] = []
    seen: set[str] = set()
    for option in options:
        keyword = _keyword(option.name)
        if keyword == "CONNECTION_LIMIT":
            keyword = "CONNECTION LIMIT"
        where = f"database {name!r}: option {option.name!r}"
        kind = _DB_OPTIONS.get(keyword)
        if kind is None:
            raise errors.ConfigError(
                f"{where} is not a supported database option (supported: "
                + ", ".join(sorted(_DB_OPTIONS))
                + ")"
            )
        if keyword in seen:
            raise errors.ConfigError(f"{where} is given twice")
        seen.add(keyword)
        value: str | int | bool
        if kind == "int":  # CONNECTION LIMIT, the only integer option
            value = _parse_connlimit(where, option.value)
        elif kind == "bool":
            value = _parse_bool(where, option.value)
        else:
            if option.value is None:
                raise errors.ConfigError(f"{where} needs a value")
            value = option.value
        parsed.append(DbOption(keyword=keyword, value=value))
    by_keyword = {o.keyword: o.value for o in parsed}
    connlimit = by_keyword.get("CONNECTION LIMIT")
    allow = by_keyword.get("ALLOW_CONNECTIONS")
    template = by_keyword.get("IS_TEMPLATE")
    return DesiredDatabase(
        name=name,
        owner="",
        create_options=tuple(parsed),
        connlimit=connlimit if isinstance(connlimit, int) else None,
        allow_connections=allow if isinstance(allow, bool) else None,
        is_template=template if isinstance(template, bool) else None,
    )


def _jwks_roles(compute_spec: spec.ComputeSpec) -> frozenset[str]:
    config = compute_spec.local_proxy_config or {}
    names: set[str] = set()
    for entry in config.get("jwks") or []:
        if isinstance(entry, dict):
            names.update(str(n) for n in entry.get("role_names") or [])
    return frozenset(names)


def _deltas(compute_spec: spec.ComputeSpec, *, privileged_role: str) -> tuple[Delta, ...]:
    result = []
    for op in compute_spec.delta_operations or []:
        if op.action not in ("delete_db", "rename_db", "delete_role", "rename_role"):
            continue  # Neon ignores unknown actions
        kind = "role" if op.action.endswith("_role") else "database"
        validate_name(kind, op.name)
        if op.action.startswith("rename"):
            if op.new_name is None:
                raise errors.ConfigError(f"delta {op.action} of {op.name!r} needs new_name")
            if kind == "role":
                _validate_role_name(op.new_name, privileged_role=privileged_role)
            else:
                validate_name(kind, op.new_name)
        if kind == "role" and op.name == privileged_role:
            raise errors.ConfigError(f"delta {op.action} names the privileged role {op.name!r}")
        result.append(Delta(action=op.action, name=op.name, new_name=op.new_name))  # type: ignore[arg-type]
    return tuple(result)


def from_spec(compute_spec: spec.ComputeSpec, *, privileged_role: str) -> Desired:
    """Normalise and validate; raises ``ConfigError`` naming the offending object."""
    validate_name("privileged role", privileged_role)
    jwks = _jwks_roles(compute_spec)
    roles: list[DesiredRole] = []
    for role in compute_spec.cluster.roles:
        _validate_role_name(role.name, privileged_role=privileged_role)
        roles.append(
            DesiredRole(
                name=role.name,
                attrs=parse_role_options(role.name, role.options or []),
                password=stored_password(role),
                plain=role.name in jwks,
            )
        )
    databases: list[DesiredDatabase] = []
    for database in compute_spec.cluster.databases:
        validate_name("database", database.name)
        validate_name("owner of database " + repr(database.name), database.owner)
        parsed = parse_database_options(database.name, database.options or [])
        databases.append(dataclasses.replace(parsed, owner=database.owner))
    for kind, names in (
        ("role", [r.name for r in roles]),
        ("database", [d.name for d in databases]),
    ):
        duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
        if duplicates:
            raise errors.ConfigError(f"duplicate {kind} names in the spec: {duplicates}")
    deltas = _deltas(compute_spec, privileged_role=privileged_role)
    role_names = {r.name for r in roles}
    db_names = {d.name for d in databases}
    for delta in deltas:
        if delta.action == "delete_role" and delta.name in role_names:
            raise errors.ConfigError(
                f"role {delta.name!r} is both in cluster.roles and deleted by delta_operations"
            )
        if delta.action == "delete_db" and delta.name in db_names:
            raise errors.ConfigError(
                f"database {delta.name!r} is both in cluster.databases and deleted by "
                "delta_operations"
            )
    return Desired(
        privileged_role=privileged_role,
        roles=tuple(roles),
        databases=tuple(databases),
        deltas=deltas,
        drop_subscriptions_before_start=compute_spec.drop_subscriptions_before_start,
        timeline_id=compute_spec.timeline_id or "",
    )
