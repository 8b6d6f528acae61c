"""What the compute mode means on disk: signal files (the mode's settings are ``pgconf``'s).

Neon's modes: ``Primary`` (read-write, syncs the safekeepers), ``Static`` at an LSN
(read-only at that point: ``standby.signal`` plus ``recovery_target_lsn``) and
``Replica`` (a hot standby following the primary: ``standby.signal``). Also owns
the ``zenith.signal`` -> ``neon.signal`` copy Neon does after a basebackup from an
older pageserver.

Pure except for the two small file writers; knows nothing of libpq or processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compute_ctl.compute import pgtools
from compute_ctl.compute import spec as spec_mod

__all__ = ["basebackup_lsn_for", "copy_neon_signal", "write_signal_files"]


def basebackup_lsn_for(spec: spec_mod.ComputeSpec) -> str | None:
    """The LSN a non-primary asks the pageserver for: Static's, or latest (``None``)."""
    if spec.mode.kind == "Static":
        return spec.mode.lsn
    return None


def write_signal_files(spec: spec_mod.ComputeSpec, pgdata: Path, *, owner: pgtools.OsUser) -> None:
    """``standby.signal`` for Replica and Static; a primary must have none."""
    signal = pgdata / "standby.signal"
    if spec.mode.kind in ("Replica", "Static"):
        signal.touch(mode=0o600)
        owner.chown(signal)
    else:
        signal.unlink(missing_ok=True)


def copy_neon_signal(pgdata: Path, *, owner: pgtools.OsUser) -> None:
    """Older pageservers send ``zenith.signal``; the neon extension reads ``neon.signal``."""
    old = pgdata / "zenith.signal"
    new = pgdata / "neon.signal"
    if old.exists() and not new.exists():
        shutil.copyfile(old, new)
        new.chmod(0o600)
        owner.chown(new)
