"""Test support shared by every tier and by the benchmarks (``bench/``).

One copy of each piece the tiers used to fork:

- ``specs``: the local-mode spec every real compute starts from, and SCRAM verifiers;
- ``compute_process``: compute_ctl as a real subprocess on loopback ports
  (``ComputeProcess``, ``running_compute``), with the process inspection it needs;
- ``nodedouble``: the node double the HTTP layer is served over without a real node;
- ``jwts``: keys and tokens made as a control plane would;
- ``remote_ext``: extension archives from Debian packages, a private install tree, and a
  loopback stand-in for Neon's extension gateway.

Nothing here is a test; nothing here imports a tier's own modules.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SUPERUSER = "cloud_admin"
