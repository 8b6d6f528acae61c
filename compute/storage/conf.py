"""The storage lines of ``postgresql.conf`` (Neon's ``config.rs``, storage section).

``neon.stripe_size`` (before the connstring, which depends on it),
``neon.pageserver_connstring`` (every shard's libpq URL; left out when any shard has
none), ``neon.pageserver_grpc_urls``, ``neon.safekeepers`` (``[g#N:]sk1,sk2``), the
tenant/timeline/project/branch/endpoint ids.
Values are quoted as postgresql.conf wants them. The storage token is never written
here: postgres gets it as the environment variable ``NEON_AUTH_TOKEN``.

Pure: a function of the spec.
"""

from __future__ import annotations

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import conninfo

__all__ = ["neon_conf_lines", "postgres_env", "quote", "storage_lines"]


def quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def neon_conf_lines(
    spec: spec_mod.ComputeSpec,
    *,
    privileged_role: str,
    internal_port: int,
) -> list[str]:
    """The ``neon.*`` lines pgconf puts at Neon's storage position; ``[]`` in local mode.

    ``privileged_role`` and ``internal_port`` are part of the contract with pgconf, which
    writes ``neon.privileged_role_name`` and ``neon.extension_server_port`` itself, at
    their own (later) positions in Neon's order; they are not repeated here.
    """
    del privileged_role, internal_port
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
            lines.append(f"neon.pageserver_connstring={quote(','.join(libpq))}")
        else:
            lines.append("# no neon.pageserver_connstring")
        grpc = pageservers.grpc_urls()
        if grpc is not None and spec.pageserver_connection_info is not None:
            lines.append(f"neon.pageserver_grpc_urls={quote(','.join(grpc))}")
    safekeepers = conninfo.safekeepers(spec)
    if spec.safekeeper_connstrings:
        lines.append(f"neon.safekeepers={quote(safekeepers.conf_value())}")
    for name in ("tenant_id", "timeline_id", "project_id", "branch_id", "endpoint_id"):
        value = getattr(spec, name)
        if value is not None:
            lines.append(f"neon.{name}={quote(value)}")
    return lines


def postgres_env(spec: spec_mod.ComputeSpec) -> dict[str, str]:
    """Environment for the postmaster: the storage token as ``NEON_AUTH_TOKEN``."""
    if spec.storage_auth_token is None:
        return {}
    return {"NEON_AUTH_TOKEN": spec.storage_auth_token}
