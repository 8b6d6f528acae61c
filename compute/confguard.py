"""The managed settings as postgres sees them, for the node (beyond Neon).

``ConfGuard`` keeps the ``pg_settings`` definitions of the running server (read once
per server start) and answers three questions for the configurator:

- ``check_values``: would PostgreSQL refuse a value of ``cluster.settings``? Asked on a
  running compute before a spec is stored; ``ConfigError`` (HTTP 400) names the setting.
- ``inspect``: what does PostgreSQL make of the conf files just written, before the
  reload (``pg_file_settings``)? Refused lines, and ``ALTER SYSTEM`` overrides of managed
  settings.
- ``repair``: reset those overrides (``ALTER SYSTEM RESET``; the caller reloads), logged
  and counted in ``compute_ctl_setting_overrides_repaired_total``.

The SQL lives in ``catalog.settings``; the node decides when to ask.
"""

from __future__ import annotations

import asyncio
import logging

from compute_ctl.compute import errors, metrics
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import settings as catalog_settings

__all__ = ["ConfGuard"]

logger = logging.getLogger(__name__)

_DEFINITIONS_TIMEOUT_S = 2.0


def _managed(spec: spec_mod.ComputeSpec) -> list[tuple[str, str | None]]:
    return [(o.name, o.value) for o in spec.cluster.settings or []]


class ConfGuard:
    def __init__(self, *, metrics: metrics.Metrics) -> None:
        self._metrics = metrics
        self._definitions = catalog_settings.GucCache()

    async def warm(self, *, connstr: str, server: int) -> None:
        """Read the definitions now, so that ``check_values`` does not wait on I/O later
        (``/configure`` checks ``If-Match`` and stores the spec without a pause between)."""
        try:
            async with asyncio.timeout(_DEFINITIONS_TIMEOUT_S):
                await self._definitions.rows(connstr=connstr, key=server)
        except (TimeoutError, errors.ComputeError) as e:
            logger.warning("setting definitions not read now: %s", e)

    async def check_values(self, spec: spec_mod.ComputeSpec, *, connstr: str, server: int) -> None:
        """Raise ``ConfigError`` for a value PostgreSQL would refuse.

        Best effort: if postgres cannot tell its definitions now (stopped, restarting),
        ``inspect`` still refuses the spec before any reload.
        """
        try:
            async with asyncio.timeout(_DEFINITIONS_TIMEOUT_S):
                definitions = await self._definitions.rows(connstr=connstr, key=server)
        except (TimeoutError, errors.ComputeError) as e:
            logger.warning("setting values not checked now (postgres did not answer): %s", e)
            return
        catalog_settings.check_values(definitions, _managed(spec))

    async def inspect(
        self, spec: spec_mod.ComputeSpec, *, connstr: str, server: int
    ) -> catalog_settings.ConfReport:
        return await catalog_settings.inspect_conf(
            connstr=connstr,
            managed=[name for name, _ in _managed(spec)],
            definitions=await self._definitions.rows(connstr=connstr, key=server),
        )

    async def repair(self, report: catalog_settings.ConfReport, *, connstr: str) -> None:
        """``ALTER SYSTEM`` must not override a managed setting: reset it (the caller
        reloads)."""
        if not report.overrides:
            return
        logger.warning(
            "ALTER SYSTEM overrides managed settings, resetting them: %s",
            ", ".join(report.overrides),
        )
        await catalog_settings.reset_overrides(connstr=connstr, names=report.overrides)
        self._metrics.setting_overrides_repaired.inc(len(report.overrides))
