"""Spec checks for the storage paths, run before anything is touched.

Neon's ``ParsedSpec::validate`` plus what the start path needs: a primary on Neon
storage needs a non-empty list of unique safekeepers; Neon storage needs a tenant, a
timeline and a pageserver for shard 0; a vanilla replica (``primary_connstring``) is
exclusive with Neon storage, runs in ``Replica`` mode and needs a parsable libpq
connection string. Every libpq connection string of the spec sets only the keys
``conninfo.check_libpq_conninfo`` allows (root's libpq must not touch local files).
Every failure is an ``errors.ConfigError`` (HTTP 400) whose text
never contains a password or a token.

Pure: no I/O, no logging of the spec.
"""

from __future__ import annotations

import dataclasses

from compute_ctl.compute import errors
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import conninfo

__all__ = ["NeonTarget", "check_spec", "neon_target"]


@dataclasses.dataclass(frozen=True)
class NeonTarget:
    """A checked Neon storage target: what the start path needs, all present."""

    tenant: str
    timeline: str
    pageserver_url: str
    safekeepers: conninfo.Safekeepers


def check_spec(spec: spec_mod.ComputeSpec) -> None:
    """Raise ``errors.ConfigError`` when the spec cannot start on its storage."""
    if spec.primary_connstring is not None:
        _check_vanilla_replica(spec)
    elif spec.has_neon_storage():
        neon_target(spec)


def neon_target(spec: spec_mod.ComputeSpec) -> NeonTarget:
    """Check a Neon storage spec and return its tenant, timeline, shard 0 and safekeepers."""
    tenant, timeline = conninfo.tenant_timeline(spec)
    if tenant is None:
        raise errors.ConfigError("tenant id should be provided (tenant_id or neon.tenant_id)")
    if timeline is None:
        raise errors.ConfigError("timeline id should be provided (timeline_id or neon.timeline_id)")
    pageservers = conninfo.pageservers(spec)
    if pageservers is None:
        raise errors.ConfigError("pageserver connection info should be provided")
    url = pageservers.shard0.libpq_url
    if url is None:
        raise errors.ConfigError("shard 0 has no pageserver libpq_url")
    for shard_url in pageservers.libpq_urls() or [url]:
        conninfo.check_libpq_conninfo(shard_url, what="pageserver libpq_url")
    if spec.mode.kind == "Static" and not spec.mode.lsn:
        raise errors.ConfigError("Static mode needs an LSN")
    safekeepers = conninfo.safekeepers(spec)
    target = NeonTarget(
        tenant=tenant, timeline=timeline, pageserver_url=url, safekeepers=safekeepers
    )
    if spec.mode.kind != "Primary":
        return target
    # Neon: "we want unique entries, and at least one entry"; an even count is fine
    # (a fourth safekeeper is appended while one of three is being replaced).
    if not safekeepers.connstrings:
        raise errors.ConfigError("safekeeper_connstrings is empty")
    seen: set[str] = set()
    for connstring in safekeepers.connstrings:
        if connstring in seen:
            raise errors.ConfigError(f"duplicate entry in safekeeper_connstrings: {connstring}")
        seen.add(connstring)
        conninfo.split_host_port(connstring)
    return target


def _check_vanilla_replica(spec: spec_mod.ComputeSpec) -> None:
    if spec.has_neon_storage():
        raise errors.ConfigError(
            "primary_connstring cannot be combined with a pageserver or safekeepers"
        )
    if spec.mode.kind != "Replica":
        raise errors.ConfigError(
            f'primary_connstring needs mode "Replica" (got {spec.mode.kind!r}): '
            "a vanilla replica follows its primary as a hot standby"
        )
    assert spec.primary_connstring is not None
    conninfo.check_libpq_conninfo(spec.primary_connstring, what="primary_connstring")
