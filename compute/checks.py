"""Checks a parsed spec must pass before compute_ctl acts on it (start or ``/configure``).

pydantic already enforced the wire shape; these are the semantic checks Neon makes when it
builds a ``ParsedSpec`` (pageserver info, tenant/timeline, primary safekeepers non-empty and
unique) plus ours: the spec's ``port`` must agree with ``-C``, and every setting must render
to one valid ``postgresql.conf`` line. Each failure raises ``errors.ConfigError`` naming the
field; nothing here has side effects.
"""

from __future__ import annotations

import importlib

from compute_ctl.compute import errors, params, pgconf
from compute_ctl.compute import spec as spec_mod

__all__ = ["check_spec"]


def _check_port(spec: spec_mod.ComputeSpec, local: params.LocalConn) -> None:
    raw = spec.cluster.setting("port")
    if raw is None:
        return
    if not raw.isdigit():
        raise errors.ConfigError(f"spec.cluster.settings: port {raw!r} is not a number")
    if int(raw) != local.port:
        raise errors.ConfigError(
            f"spec.cluster.settings: port {raw} disagrees with -C/--connstr port {local.port}"
        )


def _check_settings(spec: spec_mod.ComputeSpec) -> None:
    for index, option in enumerate(spec.cluster.settings or []):
        where = f"spec.cluster.settings.{index}"
        if option.value is None:
            raise errors.ConfigError(f"{where}: setting {option.name!r} has no value")
        try:
            pgconf.render_option(option)
        except errors.ConfigError as e:
            raise errors.ConfigError(f"{where}: {e}") from e


def _check_neon_storage(spec: spec_mod.ComputeSpec) -> None:
    tenant = spec.tenant_id or spec.cluster.setting("neon.tenant_id")
    timeline = spec.timeline_id or spec.cluster.setting("neon.timeline_id")
    if not tenant:
        raise errors.ConfigError("spec.tenant_id: required with Neon storage")
    if not timeline:
        raise errors.ConfigError("spec.timeline_id: required with Neon storage")
    has_pageserver = (
        spec.pageserver_connection_info is not None
        or spec.pageserver_connstring
        or spec.cluster.setting("neon.pageserver_connstring")
    )
    if not has_pageserver:
        raise errors.ConfigError("spec.pageserver_connection_info: required with Neon storage")
    if spec.mode.kind == "Primary":
        safekeepers = spec.safekeeper_connstrings
        if not safekeepers and not spec.cluster.setting("neon.safekeepers"):
            raise errors.ConfigError("spec.safekeeper_connstrings: a primary needs safekeepers")
        if len(set(safekeepers)) != len(safekeepers):
            raise errors.ConfigError("spec.safekeeper_connstrings: duplicate safekeepers")


def check_spec(spec: spec_mod.ComputeSpec, *, local: params.LocalConn) -> None:
    """Raise ``ConfigError`` unless ``spec`` can run with this ``-C``."""
    _check_port(spec, local)
    _check_settings(spec)
    if spec.has_neon_storage():
        _check_neon_storage(spec)
    if spec.has_neon_storage() or spec.primary_connstring is not None:
        # The storage package's own checks (shard map, addresses, vanilla replica rules).
        importlib.import_module("compute_ctl.compute.storage").check_spec(spec)
