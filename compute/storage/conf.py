"""The storage lines of ``postgresql.conf`` (Neon's ``config.rs``, storage section).

``neon.stripe_size`` (before the connstring, which depends on it),
``neon.pageserver_connstring`` (every shard's libpq URL; left out when any shard has
none), ``neon.pageserver_grpc_urls``, ``neon.safekeepers`` (``[g#N:]sk1,sk2``), the
tenant/timeline/project/branch/endpoint ids.
Values are quoted by ``pgconf.escape_conf_value`` (the one conf quoting, which also
escapes line breaks). The storage token is never written here: the launcher hands it to
postgres as the environment variable ``NEON_AUTH_TOKEN``.

Pure: a function of the spec.
"""

from __future__ import annotations

from compute_ctl.compute import pgconf
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import conninfo

__all__ = ["neon_conf_lines", "storage_lines"]


def neon_conf_lines(spec: spec_mod.ComputeSpec) -> list[str]:
    """The ``neon.*`` lines pgconf puts at Neon's storage position; ``[]`` in local mode."""
    if not spec.has_neon_storage():
        return []
    return storage_lines(spec)


def storage_lines(spec: spec_mod.ComputeSpec) -> list[str]:
    """Where the pageservers and safekeepers are, and the ids (what sync-safekeepers reads)."""
    lines = ["# Neon storage settings"]
    pageservers = conninfo.pageservers(spec)
    if pageservers is not None:
        if pageservers.stripe_size is not None:
            lines.append(f"neon.stripe_size={pageservers.stripe_size}")
        libpq = pageservers.libpq_urls()
        if libpq is not None:
            lines.append(f"neon.pageserver_connstring={pgconf.escape_conf_value(','.join(libpq))}")
        else:
            lines.append("# no neon.pageserver_connstring")
        grpc = pageservers.grpc_urls()
        if grpc is not None and spec.pageserver_connection_info is not None:
            lines.append(f"neon.pageserver_grpc_urls={pgconf.escape_conf_value(','.join(grpc))}")
    safekeepers = conninfo.safekeepers(spec)
    if spec.safekeeper_connstrings:
        lines.append(f"neon.safekeepers={pgconf.escape_conf_value(safekeepers.conf_value())}")
    for name in ("tenant_id", "timeline_id", "project_id", "branch_id", "endpoint_id"):
        value = getattr(spec, name)
        if value is not None:
            lines.append(f"neon.{name}={pgconf.escape_conf_value(value)}")
    return lines
