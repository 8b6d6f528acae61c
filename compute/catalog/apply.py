"""The catalog's public entry points: apply a desired state, plan it (dry run), report drift.

``apply_desired``/``plan_desired`` take the ``Desired`` that admission built (the node's
path: no input error can surface here). ``apply_spec``/``plan_spec``/``drift_report``
take a spec and normalise it first (``ConfigError`` before any connection), for callers
outside the node. Each call observes the catalog through one hardened session and plans
with the pure planner. Only the apply executes, and it is idempotent: after it
succeeds, the plan of the same spec is empty. The node's configurator is its only
caller in production.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import db, drift, execute, model, observe, planner
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.catalog import plan as plan_mod

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "ApplyResult",
    "apply_desired",
    "apply_spec",
    "drift_report",
    "plan_desired",
    "plan_spec",
]

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 100
"""Neon caps per-database sessions at 100 ("Too many open files", #12663). The caller
chooses the concurrency (the node follows Neon's rule: a third of ``max_connections``
while starting, ``reconfigure_concurrency`` afterwards); we only clamp it."""


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    plan: plan_mod.Plan
    statements_executed: int
    elapsed: float
    """Seconds from the first connection to the last statement."""


async def _observe(
    conn: observe.Connection,
    *,
    connstr: str,
    desired: desired_mod.Desired,
    concurrency: int,
) -> model.Catalog:
    return await observe.snapshot(
        conn,
        connstr=connstr,
        privileged_role=desired.privileged_role,
        visit=[d.name for d in desired.databases],
        concurrency=concurrency,
    )


async def apply_spec(
    *,
    connstr: str,
    spec: spec_mod.ComputeSpec,
    privileged_role: str,
    concurrency: int,
    deadline: float | None = None,
) -> ApplyResult:
    """Bring the catalog to ``spec``; raises ``ConfigError`` (nothing touched) or
    ``ApplyError`` (naming phase and object; re-running is safe). Statements that wait
    for a lock are retried until ``deadline`` (``time.monotonic()``; ``execute``)."""
    desired = desired_mod.from_spec(spec, privileged_role=privileged_role)
    return await apply_desired(
        connstr=connstr, desired=desired, concurrency=concurrency, deadline=deadline
    )


async def apply_desired(
    *,
    connstr: str,
    desired: desired_mod.Desired,
    concurrency: int,
    deadline: float | None = None,
) -> ApplyResult:
    """Bring the catalog to an admitted ``desired``; raises ``ApplyError`` (naming phase
    and object; re-running is safe). Statements that wait for a lock are retried until
    ``deadline`` (``time.monotonic()``; ``execute``)."""
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    started = time.monotonic()
    async with db.connect(connstr) as conn:
        catalog = await _observe(conn, connstr=connstr, desired=desired, concurrency=concurrency)
        plan = planner.plan(desired, catalog)
        executed = 0
        if plan:
            executed = await execute.run(
                plan,
                connstr=connstr,
                concurrency=concurrency,
                maintenance=conn,
                deadline=deadline,
            )
    elapsed = time.monotonic() - started
    logger.info(
        "catalog applied: %d operations, %d statements in %.3f s",
        len(plan),
        executed,
        elapsed,
    )
    return ApplyResult(plan=plan, statements_executed=executed, elapsed=elapsed)


async def plan_spec(
    *,
    connstr: str,
    spec: spec_mod.ComputeSpec,
    privileged_role: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> plan_mod.Plan:
    """The dry run: what ``apply_spec`` would execute now. Changes nothing."""
    desired = desired_mod.from_spec(spec, privileged_role=privileged_role)
    return await plan_desired(connstr=connstr, desired=desired, concurrency=concurrency)


async def plan_desired(
    *, connstr: str, desired: desired_mod.Desired, concurrency: int = DEFAULT_CONCURRENCY
) -> plan_mod.Plan:
    """The dry run of an admitted ``desired``. Changes nothing."""
    async with db.connect(connstr) as conn:
        catalog = await _observe(conn, connstr=connstr, desired=desired, concurrency=concurrency)
    return planner.plan(desired, catalog)


async def drift_report(
    *,
    connstr: str,
    spec: spec_mod.ComputeSpec,
    privileged_role: str,
) -> drift.DriftReport:
    """Objects that differ from ``spec`` (changed behind our back, or never applied)."""
    desired = desired_mod.from_spec(spec, privileged_role=privileged_role)
    async with db.connect(connstr) as conn:
        catalog = await _observe(conn, connstr=connstr, desired=desired, concurrency=1)
    return drift.report(desired, catalog)
