"""The shapes the role and database planners share: diff, overlay, rename, one statement.

- ``stated_changes``: what differs in the fields the spec states (``None`` = not stated);
- ``overlay``: the observed object with the stated fields put over it;
- ``rename``: ``ALTER <kind> old RENAME TO new`` as one maintenance-database operation;
- ``operation``: one statement on the maintenance database.

Pure: composed ``psycopg.sql`` and frozen dataclasses, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from psycopg import sql

from compute_ctl.compute.catalog import model
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["operation", "overlay", "rename", "stated_changes"]

_Info = TypeVar("_Info")


def stated_changes(wanted: object, observed: object, fields: Iterable[str]) -> list[model.Change]:
    """A ``Change`` per field of ``fields`` that ``wanted`` states and ``observed`` differs in."""
    changes = []
    for field in fields:
        value = getattr(wanted, field)
        if value is not None and value != getattr(observed, field):
            changes.append(model.Change(field, getattr(observed, field), value))
    return changes


def overlay(observed: _Info, stated: Mapping[str, Any], **also: Any) -> _Info:
    """``observed`` with every non-``None`` value of ``stated`` (and ``also``) put over it."""
    updates = {name: value for name, value in stated.items() if value is not None}
    return dataclasses.replace(observed, **updates, **also)  # type: ignore[type-var]


def operation(
    phase: plan_mod.Phase,
    statement: plan_mod.Statement,
    *,
    comment: str,
    obj: str,
    transactional: bool = True,
    key: str | None = None,
) -> plan_mod.Operation:
    """One statement on the maintenance database."""
    return plan_mod.Operation(
        phase=phase,
        database=None,
        statements=(statement,),
        comment=comment,
        obj=obj,
        transactional=transactional,
        key=key,
    )


def rename(phase: plan_mod.Phase, *, kind: str, old: str, new: str) -> plan_mod.Operation:
    """``ALTER ROLE|DATABASE old RENAME TO new``."""
    statement = sql.SQL("ALTER {} {} RENAME TO {}").format(
        sql.SQL(kind.upper()), sql.Identifier(old), sql.Identifier(new)
    )
    return operation(
        phase, statement, comment=f"rename {kind} {old!r} to {new!r}", obj=f"{kind} {old!r}"
    )
