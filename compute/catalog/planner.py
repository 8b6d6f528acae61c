"""The planner: Neon's phases, in order, over a simulated catalog.

``plan(desired, catalog)`` runs each phase's pure planner on the catalog the previous
phases will have produced and concatenates their operations. It does no I/O; the same
inputs always give the same plan, and a catalog that already matches gives an empty one.
"""

from __future__ import annotations

from collections.abc import Callable

from compute_ctl.compute.catalog import (
    databases,
    extensions,
    model,
    perdb,
    roles,
    subscriptions,
    system,
)
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = ["PHASES", "plan"]

Planner = Callable[
    [desired_mod.Desired, model.Catalog], tuple[list[plan_mod.Operation], model.Catalog]
]

PHASES: tuple[tuple[plan_mod.Phase, Planner], ...] = (
    (plan_mod.Phase.CREATE_PRIVILEGED_ROLE, roles.privileged_role),
    (plan_mod.Phase.DROP_INVALID_DATABASES, databases.drop_invalid_databases),
    (plan_mod.Phase.RENAME_ROLES, roles.rename_roles),
    (plan_mod.Phase.CREATE_AND_ALTER_ROLES, roles.create_and_alter_roles),
    (plan_mod.Phase.RENAME_AND_DELETE_DATABASES, databases.rename_and_delete_databases),
    (plan_mod.Phase.CREATE_AND_ALTER_DATABASES, databases.create_and_alter_databases),
    (plan_mod.Phase.CREATE_SCHEMA_NEON, system.create_schema_neon),
    (plan_mod.Phase.DELETE_ROLE_SHARED_REFERENCES, perdb.shared_references),
    (plan_mod.Phase.PER_DATABASE, perdb.plan_per_database),
    (plan_mod.Phase.EXTENSIONS, extensions.plan_extensions),
    (plan_mod.Phase.NEON_EXTENSION, system.neon_extension),
    (plan_mod.Phase.AVAILABILITY_CHECK, system.availability_check),
    (plan_mod.Phase.DROP_ROLES, roles.drop_roles),
    (plan_mod.Phase.FINALIZE_DROP_SUBSCRIPTIONS, subscriptions.finalize),
)
assert tuple(phase for phase, _ in PHASES) == plan_mod.PHASE_ORDER


def plan(desired: desired_mod.Desired, catalog: model.Catalog) -> plan_mod.Plan:
    operations: list[plan_mod.Operation] = []
    for phase, planner in PHASES:
        ops, catalog = planner(desired, catalog)
        assert all(op.phase is phase for op in ops), phase
        operations.extend(ops)
    return plan_mod.Plan(tuple(operations))
