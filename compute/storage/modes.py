"""What the compute mode means on disk: signal files (the mode's settings are ``pgconf``'s).

Neon's modes: ``Primary`` (read-write, syncs the safekeepers), ``Static`` at an LSN
(read-only at that point: ``standby.signal`` plus ``recovery_target_lsn``) and
``Replica`` (a hot standby following the primary: ``standby.signal``). Also owns
the ``zenith.signal`` -> ``neon.signal`` copy Neon does after a basebackup from an
older pageserver.

Pure except for the two small file writers (through ``safefs``: no link is followed);
knows nothing of libpq or processes.
"""

from __future__ import annotations

from pathlib import Path

from compute_ctl.compute import pgtools, safefs
from compute_ctl.compute import spec as spec_mod

__all__ = ["basebackup_lsn_for", "copy_neon_signal", "write_signal_files"]


def basebackup_lsn_for(spec: spec_mod.ComputeSpec) -> str | None:
    """The LSN a non-primary asks the pageserver for: Static's, or latest (``None``)."""
    if spec.mode.kind == "Static":
        return spec.mode.lsn
    return None


def write_signal_files(spec: spec_mod.ComputeSpec, pgdata: Path, *, owner: pgtools.OsUser) -> None:
    """``standby.signal`` for Replica and Static; a primary must have none."""
    if spec.mode.kind in ("Replica", "Static"):
        safefs.write_bytes(pgdata, "standby.signal", b"", owner=owner)
    else:
        safefs.remove(pgdata, "standby.signal")


def copy_neon_signal(pgdata: Path, *, owner: pgtools.OsUser) -> None:
    """Older pageservers send ``zenith.signal``; the neon extension reads ``neon.signal``."""
    if safefs.exists(pgdata, "zenith.signal") and not safefs.exists(pgdata, "neon.signal"):
        safefs.copy_file(pgdata, "zenith.signal", "neon.signal", owner=owner)
