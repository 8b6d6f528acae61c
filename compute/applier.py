"""The seam between the node and the catalog apply: a ``CatalogApplier`` protocol and its
default implementation over ``compute_ctl.compute.catalog``.

The node only sequences; the catalog package owns planning and executing SQL. The
applier gets admitted specs only (``admission.Admitted``: the spec and its validated
desired catalog), so it never meets an input error. Tests may inject another real
applier (a cheap one, or one that fails on cue). No SQL is written here.
"""

from __future__ import annotations

from typing import Any, Protocol

from compute_ctl.compute import admission
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import apply as catalog_apply
from compute_ctl.compute.catalog import settings as catalog_settings

__all__ = ["CatalogApplier", "ModuleApplier", "PlanLike", "start_concurrency"]


class PlanLike(Protocol):
    """What the node and the HTTP layer use of ``catalog.plan.Plan``."""

    @property
    def statement_count(self) -> int: ...

    def to_json(self) -> list[dict[str, Any]]: ...

    def __bool__(self) -> bool: ...


class CatalogApplier(Protocol):
    async def apply_spec(
        self,
        *,
        connstr: str,
        admitted: admission.Admitted,
        concurrency: int,
        # time.monotonic() by which lock waits give up (None: no bound).
        deadline: float | None = None,
    ) -> object: ...

    async def plan_spec(self, *, connstr: str, admitted: admission.Admitted) -> PlanLike: ...

    async def pending_restart(self, *, connstr: str) -> list[str]: ...


class ModuleApplier:
    """``compute_ctl.compute.catalog.apply`` and ``.settings``."""

    async def apply_spec(
        self,
        *,
        connstr: str,
        admitted: admission.Admitted,
        concurrency: int,
        deadline: float | None = None,
    ) -> catalog_apply.ApplyResult:
        return await catalog_apply.apply_desired(
            connstr=connstr, desired=admitted.desired, concurrency=concurrency, deadline=deadline
        )

    async def plan_spec(self, *, connstr: str, admitted: admission.Admitted) -> PlanLike:
        return await catalog_apply.plan_desired(connstr=connstr, desired=admitted.desired)

    async def pending_restart(self, *, connstr: str) -> list[str]:
        return await catalog_settings.pending_restart(connstr=connstr)


def start_concurrency(spec: spec_mod.ComputeSpec) -> int:
    """Per-database parallelism of the apply at start, from ``max_connections`` (Neon)."""
    raw = spec.cluster.setting("max_connections")
    if raw is None or not raw.isdigit():
        return 10
    max_connections = int(raw)
    if max_connections < 10:
        return max(max_connections, 1)
    if max_connections < 30:
        return 10
    if max_connections < 300:
        return max_connections // 3
    return 100
