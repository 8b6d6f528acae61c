"""Pure planner for the work done inside each database (Neon's ``RunInEachDatabase``).

Three concerns, each planned only where the observed catalog shows a need, so that a
re-apply of an unchanged spec opens no per-database connection:

- A deleted role's objects and privileges: ``pg_shdepend`` (a shared catalog) names
  every database holding something the role owns or was granted, including ones
  outside the spec. In each: ``REASSIGN OWNED BY`` to the database owner (the
  superuser when the owner is the role itself, or is deleted too), the revocation of
  privileges other grantors gave it (``revoke_grants.sql``), then ``DROP OWNED BY``.
  ``DROP ROLE`` comes last, in its own phase.
  REASSIGN/DROP OWNED also handle shared objects (databases it owns, privileges on
  databases...) from whichever database they run in; two such sessions running
  concurrently update the same shared rows and one fails with "tuple concurrently
  updated". So a role with shared references is first handled on the maintenance
  session alone (``shared_references``); the other databases follow concurrently
  and find no shared work left.
- Schema ``public`` of each spec database: handed to the database owner when the
  superuser owns it (pre-15 templates); the privileged role's default privileges on
  tables and sequences; on PostgreSQL 15+ (where PUBLIC lost CREATE on it) CREATE for
  the ``web_access`` role when it exists. The default privileges and the grant leave
  ``pg_shdepend`` entries, which is how ``observe`` tells a processed database from
  one still to do.
- Subscriptions inherited by a new timeline (``subscriptions.drop_before_start``).
"""

from __future__ import annotations

import importlib.resources

from psycopg import sql

from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import model, subscriptions
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["DELETING_ROLE_SETTING", "WEB_ACCESS", "plan_per_database", "shared_references"]

Phase = plan_mod.Phase
Step = tuple[list[plan_mod.Operation], model.Catalog]
SHARED = 0
WEB_ACCESS = "web_access"
"""Neon's role for its SQL-over-HTTP access; granted CREATE on ``public`` where it exists."""
DELETING_ROLE_SETTING = "compute_ctl.deleting_role"
"""How ``revoke_grants.sql`` (static text) learns the role: a transaction-local setting."""
_LEGACY_SUPERUSERS = frozenset({"cloud_admin", "zenith_admin"})


def _static(name: str) -> sql.SQL:
    text = importlib.resources.files(__package__).joinpath(name).read_text()
    return sql.SQL("\n".join(s for s in text.splitlines() if not s.startswith("--")).strip())


_REVOKE_GRANTS = _static("revoke_grants.sql")


def _release(
    name: str, new_owner: str, *, phase: plan_mod.Phase, database: str | None, where: str
) -> plan_mod.Operation:
    ident = sql.Identifier(name)
    return plan_mod.Operation(
        phase=phase,
        database=database,
        statements=(
            sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, sql.Identifier(new_owner)),
            sql.SQL("SELECT pg_catalog.set_config({}, {}, true)").format(
                sql.Literal(DELETING_ROLE_SETTING), sql.Literal(name)
            ),
            _REVOKE_GRANTS,
            sql.SQL("DROP OWNED BY {}").format(ident),
        ),
        comment=(
            f"hand what role {name!r} owns in database {where!r} to {new_owner!r} "
            "and revoke its privileges there"
        ),
        obj=f"role {name!r} in database {where!r}",
    )


def _new_owner(
    database: model.DatabaseInfo, name: str, *, deleted: set[str], catalog: model.Catalog
) -> str:
    owner = database.owner
    return catalog.superuser if owner == name or owner in deleted else owner


def _deleted_with_refs(
    desired: desired_mod.Desired, catalog: model.Catalog
) -> list[tuple[str, frozenset[int]]]:
    result = []
    for name in desired.deleted_roles:
        role = catalog.roles.get(name)
        if role is None or role.oid == 0:
            continue
        result.append((name, catalog.references.get(role.oid, frozenset())))
    return result


def shared_references(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    """A deleted role's shared objects and privileges, on the maintenance session (which
    also handles what the role holds in the maintenance database itself)."""
    ops = []
    deleted = set(desired.deleted_roles)
    maintenance = catalog.databases.get(catalog.maintenance_db)
    for name, refs in _deleted_with_refs(desired, catalog):
        if SHARED not in refs:
            continue
        new_owner = catalog.superuser
        if maintenance is not None:
            new_owner = _new_owner(maintenance, name, deleted=deleted, catalog=catalog)
        ops.append(
            _release(
                name,
                new_owner,
                phase=Phase.DELETE_ROLE_SHARED_REFERENCES,
                database=None,
                where=catalog.maintenance_db,
            )
        )
    return ops, catalog


def _role_references(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops = []
    deleted = set(desired.deleted_roles)
    for name, refs in _deleted_with_refs(desired, catalog):
        for oid in sorted(refs - {SHARED}):
            database = catalog.database_by_oid(oid)
            if database is None or not database.connectable:
                continue  # deleted in this plan, or unreachable: DROP ROLE will say why
            if SHARED in refs and database.name == catalog.maintenance_db:
                continue  # done by shared_references
            ops.append(
                _release(
                    name,
                    _new_owner(database, name, deleted=deleted, catalog=catalog),
                    phase=Phase.PER_DATABASE,
                    database=database.name,
                    where=database.name,
                )
            )
    return ops, catalog


def _wants_web_access(desired: desired_mod.Desired, catalog: model.Catalog) -> bool:
    # Before 15, PUBLIC has CREATE on public, so web_access needs no grant of its own.
    return (
        catalog.server_version >= 150000
        and WEB_ACCESS in catalog.roles
        and WEB_ACCESS not in desired.deleted_roles
    )


def _schema_work(desired: desired_mod.Desired, catalog: model.Catalog) -> Step:
    ops = []
    privileged = sql.Identifier(desired.privileged_role)
    web_access = _wants_web_access(desired, catalog)
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
        # A missing schema public ("") gets nothing; None (not visited) means the shared
        # catalog already showed the work done, or the database is new (has public).
        if web_access and not database.web_access_create and owner != "":
            statements.append(
                sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(WEB_ACCESS))
            )
            what.append(f"CREATE on schema public for {WEB_ACCESS}")
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
    # Neon's order inside each database: role references, schema, subscriptions.
    references, catalog = _role_references(desired, catalog)
    schema, catalog = _schema_work(desired, catalog)
    drops, catalog = subscriptions.drop_before_start(desired, catalog)
    return references + schema + drops, catalog
