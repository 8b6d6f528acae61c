"""The seam between the node and the catalog apply: a ``CatalogApplier`` protocol and its
default implementation over ``compute_ctl.compute.catalog``.

The node only sequences; the catalog package owns planning and executing SQL (CONTRACTS
"Catalog"). The default applier imports it lazily, so the node (and its tests) do not
depend on its import cost or presence until a spec is applied, and tolerates either sync
or async functions there. Tests may inject another real applier. No SQL is written here.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

from compute_ctl.compute import spec as spec_mod

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
        spec: spec_mod.ComputeSpec,
        privileged_role: str,
        concurrency: int,
    ) -> object: ...

    async def plan_spec(
        self,
        *,
        connstr: str,
        spec: spec_mod.ComputeSpec,
        privileged_role: str,
    ) -> PlanLike: ...

    async def pending_restart(self, *, connstr: str) -> list[str]: ...


async def _call(module: str, name: str, **kwargs: Any) -> Any:
    function = getattr(importlib.import_module(module), name)
    result = function(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class ModuleApplier:
    """``compute_ctl.compute.catalog.apply`` / ``.settings``, imported on first use."""

    _APPLY = "compute_ctl.compute.catalog.apply"
    _SETTINGS = "compute_ctl.compute.catalog.settings"

    async def apply_spec(
        self,
        *,
        connstr: str,
        spec: spec_mod.ComputeSpec,
        privileged_role: str,
        concurrency: int,
    ) -> object:
        return await _call(
            self._APPLY,
            "apply_spec",
            connstr=connstr,
            spec=spec,
            privileged_role=privileged_role,
            concurrency=concurrency,
        )

    async def plan_spec(
        self,
        *,
        connstr: str,
        spec: spec_mod.ComputeSpec,
        privileged_role: str,
    ) -> PlanLike:
        plan: PlanLike = await _call(
            self._APPLY, "plan_spec", connstr=connstr, spec=spec, privileged_role=privileged_role
        )
        return plan

    async def pending_restart(self, *, connstr: str) -> list[str]:
        names: list[str] = await _call(self._SETTINGS, "pending_restart", connstr=connstr)
        return names


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
