"""Semantically invalid spec families, shared by every entrance's admission test.

Each ``Family`` mutates a valid spec (a JSON dict whose ``cluster`` has ``roles``,
``databases`` and ``settings`` lists) into one that pydantic's shape alone may accept
but admission must refuse, and names a fragment the error must contain (the object or
field at fault). The CLI, ``/configure`` on a real compute, the operator (kmock) and the
fuzz test all run these same families. The superuser is ``cloud_admin`` and the
privileged role ``neon_superuser``, as in every tier's compute.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["FAMILIES", "Family", "invalid"]

Spec = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Family:
    id: str
    mutate: Callable[[Spec], None]
    needle: str
    """A fragment of the error message: the object or the field at fault."""


def _roles(*roles: dict[str, Any]) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        spec["cluster"]["roles"].extend(copy.deepcopy(roles))

    return mutate


def _databases(*databases: dict[str, Any], owner: str | None = None) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        if owner is not None:
            spec["cluster"]["roles"].append({"name": owner})
        spec["cluster"]["databases"].extend(copy.deepcopy(databases))

    return mutate


def _set(**fields: Any) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        spec.update(copy.deepcopy(fields))

    return mutate


def _setting(name: str, value: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        spec["cluster"]["settings"].append({"name": name, "value": value, "vartype": "string"})

    return mutate


def _connlimit(value: str) -> list[dict[str, str]]:
    return [{"name": "CONNECTION LIMIT", "value": value, "vartype": "integer"}]


FAMILIES: tuple[Family, ...] = (
    Family("duplicate-role", _roles({"name": "twin"}, {"name": "twin"}), "duplicate role names"),
    Family(
        "duplicate-database",
        _databases(
            {"name": "twin_db", "owner": "dbo"}, {"name": "twin_db", "owner": "dbo"}, owner="dbo"
        ),
        "duplicate database names",
    ),
    Family(
        "owner-not-a-role",
        _databases({"name": "orphan", "owner": "no_such_owner"}),
        "owner 'no_such_owner' is not a role",
    ),
    Family("reserved-role", _roles({"name": "pg_sneaky"}), "'pg_sneaky' is reserved"),
    Family("reserved-role-public", _roles({"name": "public"}), "'public' is reserved"),
    Family("privileged-role", _roles({"name": "neon_superuser"}), "is the privileged role"),
    Family("superuser-role", _roles({"name": "cloud_admin"}), "'cloud_admin' is the superuser"),
    Family(
        "rename-without-target",
        _set(delta_operations=[{"action": "rename_role", "name": "someone"}]),
        "rename_role of 'someone' needs new_name",
    ),
    Family(
        "delta-privileged-role",
        _set(delta_operations=[{"action": "delete_role", "name": "neon_superuser"}]),
        "names the privileged role 'neon_superuser'",
    ),
    Family(
        "delta-maintenance-db",
        _set(delta_operations=[{"action": "delete_db", "name": "postgres"}]),
        "names database 'postgres'",
    ),
    Family("unknown-mode", _set(mode="Sideways"), "mode"),
    Family("unknown-audit-level", _set(audit_log_level="Verbose"), "audit_log_level"),
    Family(
        "endpoint-id-newline",
        _set(endpoint_id="ep-1\nshared_preload_libraries = 'evil'"),
        "endpoint_id",
    ),
    Family("project-id-quote", _set(project_id="p'1"), "project_id"),
    Family("setting-name-newline", _setting("work_mem\n", "4MB"), "invalid setting name"),
    Family(
        "role-connlimit-range",
        _roles({"name": "limited", "options": _connlimit("-5")}),
        "role 'limited': option 'CONNECTION LIMIT': -5 is out of range",
    ),
    Family(
        "database-connlimit-range",
        _databases(
            {"name": "limited_db", "owner": "dbo", "options": _connlimit("2147483648")},
            owner="dbo",
        ),
        "database 'limited_db': option 'CONNECTION LIMIT': 2147483648 is out of range",
    ),
    Family("suspend-timeout-range", _set(suspend_timeout_seconds=-7), "suspend_timeout_seconds"),
)


def invalid(spec: Spec, family: Family) -> Spec:
    """A deep copy of ``spec`` with ``family``'s flaw."""
    bad = copy.deepcopy(spec)
    family.mutate(bad)
    return bad
