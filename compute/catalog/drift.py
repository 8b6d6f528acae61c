"""The drift report: what differs between the observed catalog and the desired state.

One entry per object (the privileged role, each spec role, each spec database) that is
missing or differs in a field the spec states; passwords are reported as differing,
never shown. Delta operations are commands, not state, and are not drift. The next
apply corrects every entry (its planner uses the same comparisons).

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, TypedDict

from compute_ctl.compute.catalog import databases, model, roles
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["DriftEntry", "DriftReport", "report"]

Kind = Literal["role", "database"]


class ChangeJson(TypedDict):
    field: str
    observed: model.Value
    desired: model.Value


class DriftEntryJson(TypedDict):
    kind: str
    name: str
    missing: bool
    changes: list[ChangeJson]


def _change_json(change: model.Change) -> ChangeJson:
    if change.secret:
        hidden = {
            "observed": None if change.observed is None else plan_mod.REDACTED,
            "desired": None if change.desired is None else plan_mod.REDACTED,
        }
        return {"field": change.field, "observed": hidden["observed"], "desired": hidden["desired"]}
    return {"field": change.field, "observed": change.observed, "desired": change.desired}


@dataclasses.dataclass(frozen=True)
class DriftEntry:
    kind: Kind
    name: str
    missing: bool = False
    changes: tuple[model.Change, ...] = ()

    def to_json(self) -> DriftEntryJson:
        return {
            "kind": self.kind,
            "name": self.name,
            "missing": self.missing,
            "changes": [_change_json(c) for c in self.changes],
        }


@dataclasses.dataclass(frozen=True)
class DriftReport:
    entries: tuple[DriftEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, kind: Kind, name: str) -> DriftEntry | None:
        for e in self.entries:
            if e.kind == kind and e.name == name:
                return e
        return None

    def to_json(self) -> list[DriftEntryJson]:
        return [e.to_json() for e in self.entries]


def report(desired: desired_mod.Desired, catalog: model.Catalog) -> DriftReport:
    entries: list[DriftEntry] = []
    if desired.privileged_role not in catalog.roles:
        entries.append(DriftEntry("role", desired.privileged_role, missing=True))
    for role in desired.roles:
        observed = catalog.roles.get(role.name)
        if observed is None:
            entries.append(DriftEntry("role", role.name, missing=True))
            continue
        role_changes = roles.role_changes(role, observed)
        if role_changes:
            entries.append(DriftEntry("role", role.name, changes=tuple(role_changes)))
    for database in desired.databases:
        observed_db = catalog.databases.get(database.name)
        if observed_db is None or observed_db.invalid:
            entries.append(DriftEntry("database", database.name, missing=True))
            continue
        db_changes = databases.database_changes(database, observed_db)
        if db_changes:
            entries.append(DriftEntry("database", database.name, changes=tuple(db_changes)))
    return DriftReport(tuple(entries))
