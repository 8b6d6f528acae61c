"""Pure planner for roles: the privileged role, renames, create/alter, and the final drops.

Each function takes the desired state and the (simulated) catalog and returns the
operations of its phase plus the catalog as it will be once they ran. An existing role
is altered only in what the spec states (its options, LOGIN and its password), never
in Neon's create-time defaults, so roles made outside the spec keep their attributes.
SQL is composed only with ``psycopg.sql``; passwords get a redacted twin.

Beyond Neon: before PostgreSQL 16, ``CREATEROLE`` lets a role grant itself any
non-superuser role, ``pg_execute_server_program`` included (``COPY ... FROM PROGRAM``
runs OS commands as postgres). There neither the privileged role nor a console role gets
``CREATEROLE`` by default (``createrole_by_default``); a spec that states ``CREATEROLE``
for a role still gets it. From 16 on, CREATEROLE needs ADMIN OPTION to grant, and Neon's
defaults apply unchanged.
"""

from __future__ import annotations

import dataclasses

from psycopg import sql

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import model, shapes
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = [
    "create_and_alter_roles",
    "createrole_by_default",
    "drop_roles",
    "privileged_role",
    "rename_roles",
    "role_changes",
]

Phase = plan_mod.Phase
Step = tuple[list[plan_mod.Operation], model.Catalog]

# The first PostgreSQL whose CREATEROLE cannot grant roles it has no ADMIN OPTION on.
SAFE_CREATEROLE_VERSION = 160000

_FLAG_KEYWORDS = {
    flag: (sql.SQL(flag.upper()), sql.SQL("NO" + flag.upper())) for flag in desired_mod.ROLE_FLAGS
}


def _obj(name: str) -> str:
    return f"role {name!r}"


def _attributes(attrs: desired_mod.RoleAttrs) -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    for flag in desired_mod.ROLE_FLAGS:
        value = getattr(attrs, flag)
        if value is not None:
            parts.append(_FLAG_KEYWORDS[flag][0 if value else 1])
    if attrs.connlimit is not None:
        parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(attrs.connlimit)))
    if attrs.valid_until is not None:
        parts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(attrs.valid_until)))
    return parts


def _password(value: str | None, *, redact: bool) -> sql.Composable:
    if value is None:
        return sql.SQL("PASSWORD NULL")
    return sql.SQL("PASSWORD {}").format(sql.Literal(plan_mod.REDACTED if redact else value))


def _apply_attrs(info: model.RoleInfo, attrs: desired_mod.RoleAttrs) -> model.RoleInfo:
    return shapes.overlay(info, dataclasses.asdict(attrs))


def role_changes(role: desired_mod.DesiredRole, observed: model.RoleInfo) -> list[model.Change]:
    """What differs in the fields the spec states; shared with the drift report."""
    changes = shapes.stated_changes(
        role.attrs, observed, (*desired_mod.ROLE_FLAGS, "connlimit", "valid_until")
    )
    if role.password != observed.password:
        changes.append(model.Change("password", observed.password, role.password, secret=True))
    return changes


def createrole_by_default(catalog: model.Catalog) -> bool:
    """Whether Neon's create-time CREATEROLE is safe on this server (module docstring)."""
    return catalog.server_version >= SAFE_CREATEROLE_VERSION


def privileged_role(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    """Neon's weak superuser, created once and never altered."""
    name = desired.privileged_role
    if name in catalog.roles:
        return [], catalog
    createrole = createrole_by_default(catalog)
    statement = sql.SQL("CREATE ROLE {} CREATEDB{} NOLOGIN REPLICATION BYPASSRLS{}").format(
        sql.Identifier(name),
        sql.SQL(" CREATEROLE") if createrole else sql.SQL(""),
        sql.SQL(" IN ROLE pg_read_all_data, pg_write_all_data")
        if catalog.server_version >= 140000
        else sql.SQL(""),
    )
    op = shapes.operation(
        Phase.CREATE_PRIVILEGED_ROLE,
        statement,
        comment=f"create the privileged role {name!r}",
        obj=_obj(name),
    )
    info = model.RoleInfo(
        name=name, oid=0, createdb=True, createrole=createrole, replication=True, bypassrls=True
    )
    return [op], catalog.with_role(info)


def rename_roles(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    """Rename when the old name exists and the new one does not (a replay is a no-op).

    PostgreSQL clears an md5 password on rename (the role name salts the hash), so the
    simulated role loses it and the next phase sets the password again.
    """
    ops = []
    for delta in desired.deltas_of("rename_role"):
        assert delta.new_name is not None
        old = catalog.roles.get(delta.name)
        if old is None or delta.new_name in catalog.roles:
            continue
        if delta.name == catalog.superuser:
            raise errors.ConfigError(f"cannot rename the superuser {delta.name!r}")
        ops.append(
            shapes.rename(Phase.RENAME_ROLES, kind="role", old=delta.name, new=delta.new_name)
        )
        password = old.password
        if password is not None and password.startswith("md5"):
            password = None
        renamed = dataclasses.replace(old, name=delta.new_name, password=password)
        catalog = catalog.with_role(renamed, replacing=delta.name)
    return ops, catalog


def _create(role: desired_mod.DesiredRole, *, privileged: str, catalog: model.Catalog) -> Step:
    attrs = role.attrs
    if not role.plain:
        defaults = desired_mod.CONSOLE_ROLE_DEFAULTS
        if not createrole_by_default(catalog):
            defaults = dataclasses.replace(defaults, createrole=None)
        attrs = attrs.merged_over(defaults)
    head = sql.SQL("CREATE ROLE {} WITH").format(sql.Identifier(role.name))
    tail: list[sql.Composable] = []
    if not role.plain:
        tail.append(sql.SQL("IN ROLE {}").format(sql.Identifier(privileged)))

    def statement(*, redact: bool) -> plan_mod.Statement:
        parts = [head, *_attributes(attrs)]
        if role.password is not None:
            parts.append(_password(role.password, redact=redact))
        return sql.SQL(" ").join([*parts, *tail])

    op = plan_mod.Operation(
        phase=Phase.CREATE_AND_ALTER_ROLES,
        database=None,
        statements=(statement(redact=False),),
        redacted=(statement(redact=True),) if role.password is not None else None,
        comment=f"create role {role.name!r}",
        obj=_obj(role.name),
    )
    info = _apply_attrs(model.RoleInfo(name=role.name, oid=0), attrs)
    info = dataclasses.replace(info, password=role.password)
    return [op], catalog.with_role(info)


def _alter(
    role: desired_mod.DesiredRole,
    attrs: desired_mod.RoleAttrs,
    *,
    with_password: bool,
    redact: bool,
) -> plan_mod.Statement:
    parts = [sql.SQL("ALTER ROLE {} WITH").format(sql.Identifier(role.name)), *_attributes(attrs)]
    if with_password:
        parts.append(_password(role.password, redact=redact))
    return sql.SQL(" ").join(parts)


def create_and_alter_roles(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops: list[plan_mod.Operation] = []
    for role in desired.roles:
        if role.name == catalog.superuser:
            raise errors.ConfigError(f"role {role.name!r} is the superuser compute_ctl runs as")
        observed = catalog.roles.get(role.name)
        if observed is None:
            created, catalog = _create(role, privileged=desired.privileged_role, catalog=catalog)
            ops.extend(created)
            continue
        changes = role_changes(role, observed)
        if not changes:
            continue
        fields = {c.field for c in changes}
        changed = desired_mod.RoleAttrs(
            **{f: getattr(role.attrs, f) for f in fields if f != "password"}
        )
        with_password = "password" in fields
        ops.append(
            plan_mod.Operation(
                phase=Phase.CREATE_AND_ALTER_ROLES,
                database=None,
                statements=(_alter(role, changed, with_password=with_password, redact=False),),
                redacted=(_alter(role, changed, with_password=True, redact=True),)
                if with_password
                else None,
                comment=f"alter role {role.name!r}: " + ", ".join(sorted(fields)),
                obj=_obj(role.name),
            )
        )
        updated = dataclasses.replace(_apply_attrs(observed, changed), password=role.password)
        catalog = catalog.with_role(updated)
    return ops, catalog


def drop_roles(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    """Last phase: drop each deleted role that exists (its objects were handed over)."""
    ops = []
    for name in desired.deleted_roles:
        if name not in catalog.roles:
            continue
        if name == catalog.superuser:
            raise errors.ConfigError(f"cannot delete the superuser {name!r}")
        ops.append(
            shapes.operation(
                Phase.DROP_ROLES,
                sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)),
                comment=f"drop role {name!r}",
                obj=_obj(name),
            )
        )
        catalog = catalog.without_role(name)
    return ops, catalog
