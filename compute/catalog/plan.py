"""Operations and plans: the data a planner returns and the executor runs.

An ``Operation`` is one logical change (create a role, drop a database, ...) made of one
or more SQL statements composed with ``psycopg.sql``; several statements run in one
transaction. Each carries its phase, the database it runs in (``None`` is the
maintenance database of the connection string), the object it changes (for errors)
and a redacted twin of its SQL (passwords replaced) for dry runs and logs.

Nothing here does I/O or imports the executor.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import Any

from psycopg import sql

__all__ = ["REDACTED", "Operation", "Phase", "Plan", "Statement"]

REDACTED = "<redacted>"
Statement = sql.Composed | sql.SQL


class Phase(enum.StrEnum):
    """Neon's apply phases, in execution order (the values reach the API and logs)."""

    CREATE_PRIVILEGED_ROLE = "create_privileged_role"
    DROP_INVALID_DATABASES = "drop_invalid_databases"
    RENAME_ROLES = "rename_roles"
    CREATE_AND_ALTER_ROLES = "create_and_alter_roles"
    RENAME_AND_DELETE_DATABASES = "rename_and_delete_databases"
    CREATE_AND_ALTER_DATABASES = "create_and_alter_databases"
    CREATE_SCHEMA_NEON = "create_schema_neon"
    DELETE_ROLE_SHARED_REFERENCES = "delete_role_shared_references"
    """Ours: a deleted role's shared objects and privileges, handed over once on the
    maintenance session before the concurrent per-database work (see ``perdb``)."""
    PER_DATABASE = "per_database"
    EXTENSIONS = "extensions"
    NEON_EXTENSION = "neon_extension"
    AVAILABILITY_CHECK = "create_availability_check"
    DROP_ROLES = "drop_roles"
    FINALIZE_DROP_SUBSCRIPTIONS = "finalize_drop_subscriptions"

    @property
    def per_database(self) -> bool:
        """Each database's operations run on a session to it, databases concurrently."""
        return self is Phase.PER_DATABASE

    @property
    def concurrent_keys(self) -> bool:
        """Operations with different ``key`` may run concurrently on separate sessions to
        the maintenance database (``CREATE DATABASE`` is slow and independent)."""
        return self is Phase.CREATE_AND_ALTER_DATABASES


PHASE_ORDER: tuple[Phase, ...] = tuple(Phase)


@dataclasses.dataclass(frozen=True)
class Operation:
    phase: Phase
    database: str | None
    statements: tuple[Statement, ...]
    comment: str
    obj: str
    """The object changed, e.g. ``role "app"``: named in errors; never a secret."""
    redacted: tuple[Statement, ...] | None = None
    """The statements with secrets replaced; ``None`` when there is no secret."""
    transactional: bool = True
    """False for statements PostgreSQL refuses inside a transaction block."""
    key: str | None = None
    """In a ``concurrent_keys`` phase: operations sharing a key keep their plan order,
    different keys may overlap; ``None`` is a barrier that runs alone, in order."""

    def __post_init__(self) -> None:
        if not self.statements:
            raise ValueError("an operation needs at least one statement")
        if not self.transactional and len(self.statements) != 1:
            raise ValueError("a non-transactional operation has exactly one statement")

    @property
    def safe_statements(self) -> tuple[Statement, ...]:
        return self.redacted if self.redacted is not None else self.statements

    def render(self) -> str:
        """The SQL with secrets redacted, statements separated by ``;``."""
        return "; ".join(s.as_string(None) for s in self.safe_statements)

    def to_json(self) -> dict[str, Any]:
        """``{"phase", "database", "sql" (secrets redacted), "comment"}``."""
        return {
            "phase": self.phase.value,
            "database": self.database,
            "sql": self.render(),
            "comment": self.comment,
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    """An ordered list of operations; falsy when there is nothing to do."""

    operations: tuple[Operation, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    @property
    def statement_count(self) -> int:
        return sum(len(op.statements) for op in self.operations)

    def phase(self, phase: Phase) -> tuple[Operation, ...]:
        return tuple(op for op in self.operations if op.phase is phase)

    def to_json(self) -> list[dict[str, Any]]:
        return [op.to_json() for op in self.operations]

    def render(self) -> str:
        """A readable script of the whole plan, secrets redacted (for logs and humans)."""
        lines = []
        for op in self.operations:
            where = op.database if op.database is not None else "<maintenance db>"
            lines.append(f"-- {op.phase.value} [{where}] {op.comment}")
            lines.extend(s.as_string(None) + ";" for s in op.safe_statements)
        return "\n".join(lines)
