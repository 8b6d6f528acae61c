"""The vm-monitor bridge of ``AUTOSCALING`` computes: start it once postgres is ready, stop
it when postgres exits. The vm-monitor itself is ``compute_ctl.compute.vm_monitor``,
imported only when autoscaling is on. Its failures are logged, never the compute's.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from compute_ctl.compute import params as params_mod
from compute_ctl.compute import spec as spec_mod

if TYPE_CHECKING:
    # At run time the package is imported only when autoscaling is on.
    from compute_ctl.compute.vm_monitor import VmMonitor

__all__ = ["start_vm_monitor", "stop_vm_monitor"]

logger = logging.getLogger(__name__)


async def start_vm_monitor(
    params: params_mod.Params, spec: spec_mod.ComputeSpec
) -> VmMonitor | None:
    """The running vm-monitor, or None when autoscaling is off or it failed to start."""
    if not params.autoscaling:
        return None
    from compute_ctl.compute import vm_monitor

    monitor = vm_monitor.VmMonitor(
        addr=params.vm_monitor_addr,
        cgroup_path=params.cgroup_root / params.cgroup,
        # Neon: with disable_lfc_resizing the vm-monitor gets no Postgres connection.
        filecache_connstr=None if spec.disable_lfc_resizing else params.filecache_conninfo(),
        disable_lfc_resizing=bool(spec.disable_lfc_resizing),
    )
    try:
        await monitor.start()
    except Exception as e:
        logger.error("vm-monitor did not start: %s", e)
        return None
    return monitor


async def stop_vm_monitor(monitor: VmMonitor | None) -> None:
    if monitor is not None:
        with contextlib.suppress(Exception):
            await monitor.stop()
