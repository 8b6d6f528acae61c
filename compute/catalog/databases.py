"""Pure planner for databases: invalid ones, renames and deletes, create and alter.

Deletes drop the database's logical subscriptions first (inside it, see
``subscriptions``), clear the template flag, then ``DROP DATABASE ... WITH (FORCE)``
so open sessions do not block it. Every delta is guarded by existence, so a replayed
delta plans nothing.
"""

from __future__ import annotations

import dataclasses

from psycopg import sql

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import model, shapes, subscriptions
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = [
    "create_and_alter_databases",
    "database_changes",
    "drop_invalid_databases",
    "rename_and_delete_databases",
]

Phase = plan_mod.Phase
Step = tuple[list[plan_mod.Operation], model.Catalog]
PG15_PUBLIC_OWNER = "pg_database_owner"
# Fields a spec database may leave unstated (None: keep what the catalog has).
_STATED = ("connlimit", "allow_connections", "is_template")


def _obj(name: str) -> str:
    return f"database {name!r}"


def _bool(value: bool) -> sql.Composable:
    return sql.SQL("true" if value else "false")


def _option(option: desired_mod.DbOption) -> sql.Composable:
    # The keyword comes from the whitelist in ``desired``, never from the spec's text.
    value = option.value
    rendered = _bool(value) if isinstance(value, bool) else sql.Literal(value)
    return sql.SQL("{} {}").format(sql.SQL(option.keyword), rendered)


def drop_invalid_databases(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    """An interrupted DROP DATABASE leaves it invalid; the only way out is dropping it again."""
    ops = []
    for database in list(catalog.databases.values()):
        if not database.invalid:
            continue
        ops.append(
            shapes.operation(
                Phase.DROP_INVALID_DATABASES,
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database.name)),
                comment=f"drop invalid database {database.name!r}",
                obj=_obj(database.name),
                transactional=False,
            )
        )
        catalog = catalog.without_database(database.name)
    return ops, catalog


def _drop_subscriptions(database: model.DatabaseInfo) -> plan_mod.Operation:
    return plan_mod.Operation(
        phase=Phase.RENAME_AND_DELETE_DATABASES,
        database=database.name,
        statements=subscriptions.drop_statements(database.subscriptions),
        comment=f"drop the logical subscriptions of database {database.name!r} before dropping it",
        obj=_obj(database.name),
    )


def rename_and_delete_databases(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops: list[plan_mod.Operation] = []
    for delta in desired.deltas:
        if delta.action not in ("delete_db", "rename_db"):
            continue
        existing = catalog.databases.get(delta.name)
        if existing is None:
            continue
        if delta.name == catalog.maintenance_db:
            raise errors.ConfigError(
                f"cannot {delta.action.replace('_db', '')} database {delta.name!r}: "
                "compute_ctl works through it"
            )
        if delta.action == "rename_db":
            assert delta.new_name is not None
            if delta.new_name in catalog.databases:
                continue
            ops.append(
                shapes.rename(
                    Phase.RENAME_AND_DELETE_DATABASES,
                    kind="database",
                    old=delta.name,
                    new=delta.new_name,
                )
            )
            renamed = dataclasses.replace(existing, name=delta.new_name)
            catalog = catalog.with_database(renamed, replacing=delta.name)
            continue
        if existing.subscriptions and existing.connectable:
            ops.append(_drop_subscriptions(existing))
        ident = sql.Identifier(delta.name)
        # (statement, comment, transactional): DROP DATABASE cannot run in a transaction.
        steps = [
            (
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident),
                f"drop database {delta.name!r}",
                False,
            )
        ]
        if existing.is_template:
            clear = sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(ident)
            steps.insert(0, (clear, f"clear the template flag of database {delta.name!r}", True))
        ops.extend(
            shapes.operation(
                Phase.RENAME_AND_DELETE_DATABASES,
                statement,
                comment=comment,
                obj=_obj(delta.name),
                transactional=transactional,
            )
            for statement, comment, transactional in steps
        )
        catalog = catalog.without_database(delta.name)
    return ops, catalog


def database_changes(
    database: desired_mod.DesiredDatabase, observed: model.DatabaseInfo
) -> list[model.Change]:
    """What differs in the fields the spec states; shared with the drift report."""
    changes = shapes.stated_changes(database, observed, ("owner", *_STATED))
    if not observed.privileged_grant:
        changes.append(model.Change("privileged_grant", False, True))
    return changes


def _grant(name: str, privileged: str) -> plan_mod.Statement:
    return sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(
        sql.Identifier(name), sql.Identifier(privileged)
    )


def _check_owner(
    database: desired_mod.DesiredDatabase, desired: desired_mod.Desired, catalog: model.Catalog
) -> None:
    if database.owner not in catalog.roles or database.owner in desired.deleted_roles:
        raise errors.ConfigError(
            f"database {database.name!r}: owner {database.owner!r} is not a role of the spec "
            "or the catalog"
        )


def _create(
    database: desired_mod.DesiredDatabase, desired: desired_mod.Desired, catalog: model.Catalog
) -> Step:
    create = sql.SQL(" ").join(
        [
            sql.SQL("CREATE DATABASE {} WITH OWNER {}").format(
                sql.Identifier(database.name), sql.Identifier(database.owner)
            ),
            *(_option(o) for o in database.create_options),
        ]
    )
    # Creates run concurrently, except one copying a template other than the stock
    # ones: that template may be a database this very phase creates or alters.
    template = next((o.value for o in database.create_options if o.keyword == "TEMPLATE"), None)
    key = database.name if template in (None, "template0", "template1") else None
    ops = [
        shapes.operation(
            Phase.CREATE_AND_ALTER_DATABASES,
            create,
            comment=f"create database {database.name!r}",
            obj=_obj(database.name),
            transactional=False,
            key=key,
        ),
        shapes.operation(
            Phase.CREATE_AND_ALTER_DATABASES,
            _grant(database.name, desired.privileged_role),
            comment=f"grant all on database {database.name!r} to the privileged role",
            obj=_obj(database.name),
            key=key,
        ),
    ]
    info = model.DatabaseInfo(
        name=database.name,
        oid=0,
        owner=database.owner,
        connlimit=database.connlimit if database.connlimit is not None else -1,
        allow_connections=database.allow_connections is not False,
        is_template=database.is_template is True,
        privileged_grant=True,
        # Since PostgreSQL 15 a new database's public schema belongs to the
        # pg_database_owner pseudo-role; before, to the bootstrap superuser.
        public_owner=PG15_PUBLIC_OWNER if catalog.server_version >= 150000 else catalog.superuser,
    )
    return ops, catalog.with_database(info)


def _alter(
    database: desired_mod.DesiredDatabase, changes: set[str], *, privileged: str
) -> list[plan_mod.Operation]:
    ident = sql.Identifier(database.name)
    statements: list[tuple[str, plan_mod.Statement]] = []
    if "owner" in changes:
        owner = sql.Identifier(database.owner)
        statements.append(("owner", sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, owner)))
    alter: list[sql.Composable] = []
    if "connlimit" in changes:
        alter.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(database.connlimit)))
    if "allow_connections" in changes:
        allow = _bool(bool(database.allow_connections))
        alter.append(sql.SQL("ALLOW_CONNECTIONS {}").format(allow))
    if "is_template" in changes:
        alter.append(sql.SQL("IS_TEMPLATE {}").format(_bool(bool(database.is_template))))
    if alter:
        head = sql.SQL("ALTER DATABASE {} WITH ").format(ident)
        statements.append(("options", head + sql.SQL(" ").join(alter)))
    if "privileged_grant" in changes:
        statements.append(("grant", _grant(database.name, privileged)))
    return [
        shapes.operation(
            Phase.CREATE_AND_ALTER_DATABASES,
            statement,
            comment=f"alter database {database.name!r}: {what}",
            obj=_obj(database.name),
            key=database.name,
        )
        for what, statement in statements
    ]


def _altered(
    observed: model.DatabaseInfo, database: desired_mod.DesiredDatabase
) -> model.DatabaseInfo:
    stated = {field: getattr(database, field) for field in _STATED}
    return shapes.overlay(observed, stated, owner=database.owner, privileged_grant=True)


def create_and_alter_databases(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops: list[plan_mod.Operation] = []
    for database in desired.databases:
        _check_owner(database, desired, catalog)
        observed = catalog.databases.get(database.name)
        if observed is None:
            created, catalog = _create(database, desired, catalog)
            ops.extend(created)
            continue
        changes = {c.field for c in database_changes(database, observed)}
        ops.extend(_alter(database, changes, privileged=desired.privileged_role))
        catalog = catalog.with_database(_altered(observed, database))
    return ops, catalog
