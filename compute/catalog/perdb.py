"""Pure planner for the work done inside each database (Neon's ``RunInEachDatabase``).

Two concerns, both planned only where the observed catalog shows a need, so that a
re-apply of an unchanged spec opens no per-database connection:

- A deleted role's objects and privileges: ``pg_shdepend`` (a shared catalog) names
  every database holding something the role owns or was granted, including ones
  outside the spec. In each: ``REASSIGN OWNED BY`` to the database owner (the
  superuser when the owner is the role itself, or is deleted too), then
  ``DROP OWNED BY`` for the privileges. ``DROP ROLE`` comes last, in its own phase.
- Schema ``public`` of each spec database: handed to the database owner when the
  superuser owns it (pre-15 templates), and the privileged role's default privileges
  on tables and sequences. The default privileges leave a ``pg_shdepend`` entry, which
  is how ``observe`` tells a processed database from one still to do.
"""

from __future__ import annotations

from psycopg import sql

from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import model
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["plan_per_database"]

Phase = plan_mod.Phase
Step = tuple[list[plan_mod.Operation], model.Catalog]
SHARED = 0
_LEGACY_SUPERUSERS = frozenset({"cloud_admin", "zenith_admin"})


def _role_references(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops = []
    deleted = set(desired.deleted_roles)
    for name in desired.deleted_roles:
        role = catalog.roles.get(name)
        if role is None or role.oid == 0:
            continue
        refs = catalog.references.get(role.oid, frozenset())
        targets: list[tuple[str | None, str]] = []
        for oid in sorted(refs - {SHARED}):
            database = catalog.database_by_oid(oid)
            if database is None or not database.connectable:
                continue  # deleted in this plan, or unreachable: DROP ROLE will say why
            owner = database.owner
            if owner == name or owner in deleted:
                owner = catalog.superuser
            targets.append((database.name, owner))
        if SHARED in refs and not targets:
            # REASSIGN/DROP OWNED also handle shared objects (databases, tablespaces)
            # from any database; use the maintenance one when no other is visited.
            targets.append((None, catalog.superuser))
        ident = sql.Identifier(name)
        for database_name, new_owner in targets:
            where = database_name if database_name is not None else catalog.maintenance_db
            ops.append(
                plan_mod.Operation(
                    phase=Phase.PER_DATABASE,
                    database=database_name,
                    statements=(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            ident, sql.Identifier(new_owner)
                        ),
                        sql.SQL("DROP OWNED BY {}").format(ident),
                    ),
                    comment=(
                        f"hand what role {name!r} owns in database {where!r} to {new_owner!r} "
                        "and revoke its privileges there"
                    ),
                    obj=f"role {name!r} in database {where!r}",
                )
            )
    return ops, catalog


def _schema_work(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops = []
    privileged = sql.Identifier(desired.privileged_role)
    for wanted in desired.databases:
        database = catalog.databases.get(wanted.name)
        if database is None or not database.connectable:
            continue
        statements: list[plan_mod.Statement] = []
        what = []
        owner = database.public_owner
        if owner is not None and (owner == catalog.superuser or owner in _LEGACY_SUPERUSERS):
            statements.append(
                sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(database.owner))
            )
            what.append("hand schema public to the database owner")
        if not database.default_privileges and owner != "":
            statements += [
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {} TO {} "
                    "WITH GRANT OPTION"
                ).format(sql.SQL(kind), privileged)
                for kind in ("TABLES", "SEQUENCES")
            ]
            what.append("default privileges for the privileged role")
        if statements:
            ops.append(
                plan_mod.Operation(
                    phase=Phase.PER_DATABASE,
                    database=wanted.name,
                    statements=tuple(statements),
                    comment=f"database {wanted.name!r}: " + "; ".join(what),
                    obj=f"database {wanted.name!r}",
                )
            )
    return ops, catalog


def plan_per_database(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    references, catalog = _role_references(desired, catalog)
    schema, catalog = _schema_work(desired, catalog)
    return references + schema, catalog
