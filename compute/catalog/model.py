"""The observed catalog as frozen dataclasses: what ``observe`` reads, what planners see.

Pure data, no I/O. Planners treat a ``Catalog`` as immutable and derive updated copies
as their phases "happen" (``with_role``, ``without_database``...), so later phases plan
against the catalog the earlier phases will have produced, as Neon's shared context does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["Catalog", "Change", "DatabaseInfo", "ExtensionInfo", "RoleInfo"]

INVALID_CONNLIMIT = -2
"""``pg_database.datconnlimit`` of a database left behind by an interrupted DROP."""


Value = str | int | bool | None


@dataclasses.dataclass(frozen=True)
class Change:
    """One field of one object that differs between observed and desired."""

    field: str
    observed: Value
    desired: Value
    secret: bool = False
    """Never show the values (passwords): renderings print ``<redacted>``."""


@dataclasses.dataclass(frozen=True)
class RoleInfo:
    name: str
    oid: int
    """0 for a role that a planned operation creates."""
    superuser: bool = False
    inherit: bool = True
    createrole: bool = False
    createdb: bool = False
    login: bool = False
    replication: bool = False
    bypassrls: bool = False
    connlimit: int = -1
    valid_until: str | None = None
    """``rolvaliduntil`` as ISO text in UTC, ``infinity``, or ``None``."""
    password: str | None = None
    """``pg_authid.rolpassword`` verbatim (a SCRAM verifier or ``md5`` + hash)."""


@dataclasses.dataclass(frozen=True)
class DatabaseInfo:
    name: str
    oid: int
    """0 for a database that a planned operation creates."""
    owner: str
    connlimit: int = -1
    allow_connections: bool = True
    is_template: bool = False
    privileged_grant: bool = False
    """The privileged role holds CREATE, CONNECT and TEMPORARY on it."""
    default_privileges: bool = False
    """The privileged role's default privileges on tables and sequences in ``public``."""
    subscriptions: tuple[str, ...] = ()
    public_owner: str | None = None
    """Owner of schema ``public``: ``""`` when it is missing, ``None`` when not looked at
    (only databases that still need their schema work are visited)."""
    web_access_create: bool = False
    """Role ``web_access`` holds CREATE on schema ``public``: read from its ACL when the
    database is visited, otherwise inferred from ``pg_shdepend`` (see observe)."""

    @property
    def invalid(self) -> bool:
        return self.connlimit == INVALID_CONNLIMIT

    @property
    def connectable(self) -> bool:
        return self.allow_connections and not self.invalid


@dataclasses.dataclass(frozen=True)
class ExtensionInfo:
    """An extension the server can install (``pg_available_extensions``)."""

    name: str
    default_version: str
    installed_version: str | None = None
    schema: str | None = None
    """The schema it is installed in; ``None`` when not installed."""


@dataclasses.dataclass(frozen=True)
class Catalog:
    superuser: str
    """The role we are connected as (``current_user``)."""
    server_version: int
    maintenance_db: str
    """The database of the connection string (operations with ``database=None``)."""
    roles: Mapping[str, RoleInfo]
    databases: Mapping[str, DatabaseInfo]
    references: Mapping[int, frozenset[int]] = dataclasses.field(default_factory=dict)
    """Role oid -> oids of the databases holding objects it owns or privileges it was
    granted (``pg_shdepend``); 0 stands for shared objects (databases, tablespaces)."""
    preloaded: frozenset[str] = frozenset()
    extensions: frozenset[str] = frozenset()
    """Extensions installed in the maintenance database."""
    neon_schema: bool = False
    """Schema ``neon`` exists in the maintenance database."""
    neon_extension: ExtensionInfo | None = None
    """The ``neon`` extension; ``None`` when the server cannot install it (vanilla)."""
    health_check: bool = False
    """Table ``public.health_check`` exists in the maintenance database."""
    subscriptions_dropped: frozenset[str] = frozenset()
    """Timelines recorded in ``neon.drop_subscriptions_done`` (empty when it is missing):
    the subscription drop of ``drop_subscriptions_before_start`` was done for them."""

    def with_role(self, role: RoleInfo, *, replacing: str | None = None) -> Catalog:
        roles = dict(self.roles)
        if replacing is not None:
            roles.pop(replacing, None)
        roles[role.name] = role
        return dataclasses.replace(self, roles=roles)

    def without_role(self, name: str) -> Catalog:
        roles = dict(self.roles)
        roles.pop(name, None)
        return dataclasses.replace(self, roles=roles)

    def with_database(self, database: DatabaseInfo, *, replacing: str | None = None) -> Catalog:
        databases = dict(self.databases)
        if replacing is not None:
            databases.pop(replacing, None)
        databases[database.name] = database
        return dataclasses.replace(self, databases=databases)

    def without_database(self, name: str) -> Catalog:
        databases = dict(self.databases)
        databases.pop(name, None)
        return dataclasses.replace(self, databases=databases)

    def database_by_oid(self, oid: int) -> DatabaseInfo | None:
        for database in self.databases.values():
            if database.oid == oid:
                return database
        return None
