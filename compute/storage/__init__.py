"""Storage paths of a compute: Neon's safekeepers and pageserver, or a vanilla primary.

A compute on Neon storage holds no data of its own: each start syncs the safekeepers
for a commit LSN and pulls a basebackup from the pageserver; each stop of a primary
syncs again and reports the final LSN. A vanilla replica starts from
``pg_basebackup`` of its primary and follows it as a hot standby.

The node calls this package's functions and nothing else:

- ``check_spec(spec)``: raise ``errors.ConfigError`` (HTTP 400) before anything changes;
- ``neon_conf_lines(spec)``: the ``neon.*`` storage lines of ``postgresql.conf``;
- ``prepare(spec=, pgdata=, tools=, timings=)``: fill PGDATA instead of ``initdb``;
- ``lsn_before_stop(spec=, connstr=)`` then, after postgres stops,
  ``final_lsn(spec=, pgdata=, tools=, timings=, replayed_lsn=)``: the LSN of
  ``/terminate``.

Modules, one concept each: ``conninfo`` (where the storage is), ``checks``,
``safekeepers`` (commit LSN), ``basebackup`` (libpq fetch), ``extract`` (streaming
gunzip+untar), ``modes`` (signal files), ``replica`` (vanilla primary), ``conf``
(postgresql.conf lines), ``lifecycle`` (the order), ``leases`` (a Static compute's LSN
lease task, which the node starts itself). Nothing here imports the node, the HTTP server
or the catalog.
"""

from __future__ import annotations

from compute_ctl.compute.storage.checks import check_spec
from compute_ctl.compute.storage.conf import neon_conf_lines
from compute_ctl.compute.storage.lifecycle import final_lsn, lsn_before_stop, prepare

__all__ = [
    "check_spec",
    "final_lsn",
    "lsn_before_stop",
    "neon_conf_lines",
    "prepare",
]
