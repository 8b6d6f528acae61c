"""The storage steps of a compute's start and stop, in Neon's order.

``prepare`` replaces ``initdb`` when the spec names storage:

- **Neon storage** (``compute.rs`` ``prepare_pgdata``): choose the LSN (a primary
  syncs the safekeepers: fast path, else ``--sync-safekeepers``; Static uses its LSN;
  a replica asks for the latest), fetch the basebackup from shard 0's pageserver into
  PGDATA, copy ``zenith.signal`` to ``neon.signal``, write ``standby.signal`` for
  Replica and Static.
- **Vanilla replica** (``primary_connstring``): ``pg_basebackup`` of the primary.

``final_lsn`` runs after postgres has stopped: a Neon primary syncs the safekeepers
again and that LSN is what ``/terminate`` returns; a vanilla replica returns the LSN
it had replayed, read by ``lsn_before_stop`` while postgres was still up.

Sequencing only: the work is in the sibling modules. The caller (node) owns PGDATA
creation, ``postgresql.conf`` and the postmaster.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from compute_ctl.compute import errors, pgtools, safefs, state
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import (
    basebackup,
    checks,
    conf,
    modes,
    replica,
    safekeepers,
)

__all__ = ["final_lsn", "lsn_before_stop", "prepare"]

logger = logging.getLogger(__name__)


def _ensure_conf(spec: spec_mod.ComputeSpec, pgdata: Path, owner: pgtools.OsUser) -> None:
    """``--sync-safekeepers`` reads ``neon.safekeepers`` from PGDATA's postgresql.conf.

    Neon writes the whole conf before syncing; when the caller has not yet written
    one, write the storage lines so the sync can find its safekeepers.
    """
    if not safefs.exists(pgdata, "postgresql.conf"):
        text = "\n".join(conf.storage_lines(spec)) + "\n"
        safefs.write_text(pgdata, "postgresql.conf", text, owner=owner)


async def commit_lsn(
    spec: spec_mod.ComputeSpec,
    *,
    target: checks.NeonTarget,
    pgdata: Path,
    tools: pgtools.PgTools,
    timings: state.Timings,
    sync_pgbin: Path | None,
) -> str:
    """The primary's start LSN: the safekeepers' fast path, else ``--sync-safekeepers``."""
    start = time.monotonic()
    lsn = await safekeepers.timeline_status_lsn(
        target.safekeepers.connstrings,
        tenant=target.tenant,
        timeline=target.timeline,
        token=spec.storage_auth_token,
    )
    timings.sync_sk_check_ms = state.monotonic_ms(start)
    if lsn is not None:
        logger.info("safekeepers are synced at %s (fast path)", lsn)
        return lsn
    _ensure_conf(spec, pgdata, tools.user)
    lsn = await _sync_safekeepers(
        spec=spec, pgdata=pgdata, tools=tools, timings=timings, sync_pgbin=sync_pgbin
    )
    logger.info("safekeepers synced at %s", lsn)
    return lsn


async def _sync_safekeepers(
    *,
    spec: spec_mod.ComputeSpec,
    pgdata: Path,
    tools: pgtools.PgTools,
    timings: state.Timings,
    sync_pgbin: Path | None,
) -> str:
    """``postgres --sync-safekeepers`` with retries, timed as ``sync_safekeepers_ms``."""
    start = time.monotonic()
    lsn = await safekeepers.sync_with_retries(
        pgbin=sync_pgbin or tools.postgres,
        pgdata=pgdata,
        tools=tools,
        token=spec.storage_auth_token,
    )
    timings.sync_safekeepers_ms = state.monotonic_ms(start)
    return lsn


async def prepare(
    *,
    spec: spec_mod.ComputeSpec,
    pgdata: Path,
    tools: pgtools.PgTools,
    timings: state.Timings,
    sync_pgbin: Path | None = None,
) -> None:
    """Fill the (empty, or holding only postgresql.conf) ``pgdata`` from storage.

    ``sync_pgbin`` is the binary run with ``--sync-safekeepers`` (default: the node's
    postgres; only Neon's fork has that mode).
    """
    if spec.primary_connstring is not None:
        checks.check_spec(spec)
        timings.basebackup_ms = await replica.clone_primary(
            primary_connstring=spec.primary_connstring, pgdata=pgdata, tools=tools
        )
        return
    if not spec.has_neon_storage():
        raise errors.ConfigError("the spec names no storage to prepare PGDATA from")
    target = checks.neon_target(spec)
    if spec.mode.kind == "Primary":
        lsn: str | None = await commit_lsn(
            spec,
            target=target,
            pgdata=pgdata,
            tools=tools,
            timings=timings,
            sync_pgbin=sync_pgbin,
        )
    else:
        lsn = modes.basebackup_lsn_for(spec)
    request = basebackup.Request(
        url=target.pageserver_url,
        tenant=target.tenant,
        timeline=target.timeline,
        lsn=lsn,
        mode_type=spec.mode.type_name,
        token=spec.storage_auth_token,
    )
    await basebackup.fetch_with_retries(request, pgdata=pgdata, owner=tools.user, timings=timings)
    modes.copy_neon_signal(pgdata, owner=tools.user)
    modes.write_signal_files(spec, pgdata, owner=tools.user)


async def lsn_before_stop(*, spec: spec_mod.ComputeSpec, connstr: str) -> str | None:
    """Read what must be read while postgres is up: a vanilla replica's replay LSN."""
    if spec.primary_connstring is None:
        return None
    return await replica.replay_lsn(connstr)


async def final_lsn(
    *,
    spec: spec_mod.ComputeSpec,
    pgdata: Path,
    tools: pgtools.PgTools,
    timings: state.Timings,
    sync_pgbin: Path | None = None,
    replayed_lsn: str | None = None,
) -> str | None:
    """The LSN ``/terminate`` returns, once postgres has stopped (``None``: none)."""
    if spec.primary_connstring is not None:
        return replayed_lsn
    if not spec.has_neon_storage() or spec.mode.kind != "Primary":
        return None
    lsn = await _sync_safekeepers(
        spec=spec, pgdata=pgdata, tools=tools, timings=timings, sync_pgbin=sync_pgbin
    )
    logger.info("final safekeeper sync: %s", lsn)
    return lsn
