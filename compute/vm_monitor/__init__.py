"""The vm-monitor bridge: the autoscaler-agent's peer inside the compute (Neon's
``libs/vm_monitor``), run by compute_ctl when ``AUTOSCALING`` is set.

Layout, mirroring upstream:

- ``protocol``    wire models of both framings and the handshake (pure)
- ``dispatcher``  one websocket: handshake, typed sends, odd ids; one connection at a time
- ``runner``      the decisions: downscale approve/deny, upscale requests, LFC resizes
- ``cgroup``      memory figures: ``memory.stat`` sampling, ``MemTotal``
- ``filecache``   LFC sizing formula and the SQL that applies it
- ``metrics``     Prometheus counters on a registry passed in
- ``server``      ``VmMonitor``: the aiohttp server on ``--vm-monitor-addr``, ``GET /monitor``

This package never imports the node, the catalog or the HTTP API; the node imports it.
"""

from compute_ctl.compute.vm_monitor.server import Options, VmMonitor

__all__ = ["Options", "VmMonitor"]
