"""The processes beside postgres that compute_ctl configures: pgbouncer and local_proxy.

The node's hooks, in Neon's places (``compute.rs``): ``configure`` runs in the background
at start (before PGDATA) and at every reconfigure, for the parts the spec names
(``pgbouncer_settings``, ``local_proxy_config``), logging its errors; ``local_proxy_now``
is the synchronous local_proxy step of a Primary start's apply, whose error fails the
start; ``terminate`` kills pgbouncer and stops local_proxy when the compute terminates
(unless ``--dev``). One lock orders the configure runs, so a slow one never overwrites a
newer one's files. The work itself is in ``pgbouncer`` and ``local_proxy``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from compute_ctl.compute import local_proxy, params, pgbouncer
from compute_ctl.compute import spec as spec_mod

__all__ = ["Sidecars"]

logger = logging.getLogger(__name__)


class Sidecars:
    """pgbouncer and local_proxy of one compute, as ``Params`` place them."""

    def __init__(self, p: params.Params) -> None:
        self.ini = pgbouncer.ini_path(p.pgbouncer_ini, autoscaling=p.autoscaling)
        self.conninfo = pgbouncer.admin_conninfo(
            p.pgbouncer_connstr, autoscaling=p.autoscaling, environ=os.environ
        )
        self.proxy_dir: Path = p.local_proxy_dir
        self._lock = asyncio.Lock()

    async def configure(
        self, spec: spec_mod.ComputeSpec, *, tls: spec_mod.TlsConfig | None
    ) -> None:
        """Neon's spawned ``tune_pgbouncer`` and local_proxy steps; errors only logged."""
        async with self._lock:
            if spec.pgbouncer_settings is not None:
                try:
                    await pgbouncer.tune(
                        ini=self.ini,
                        conninfo=self.conninfo,
                        settings=pgbouncer.tune_settings(spec, tls),
                    )
                except Exception as e:
                    logger.error("error while tuning pgbouncer: %s", e)
            if spec.local_proxy_config is not None:
                try:
                    await self.local_proxy_now(spec, tls=tls)
                except Exception as e:
                    logger.error("error while configuring local_proxy: %s", e)

    async def local_proxy_now(
        self, spec: spec_mod.ComputeSpec, *, tls: spec_mod.TlsConfig | None
    ) -> None:
        """Write local_proxy's config and SIGHUP it; raises (a Primary start fails)."""
        if spec.local_proxy_config is None:
            return
        raw_tls = tls.model_dump() if tls is not None else None
        await asyncio.to_thread(
            local_proxy.configure, self.proxy_dir, spec.local_proxy_config, raw_tls
        )

    def terminate(self) -> None:
        """Neon's ``forward_termination_signal``: SIGKILL pgbouncer, SIGTERM local_proxy."""
        pgbouncer.kill(self.ini)
        try:
            local_proxy.terminate(self.proxy_dir)
        except local_proxy.LocalProxyError as e:
            logger.error("cannot stop local_proxy: %s", e)
