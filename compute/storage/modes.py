"""What the compute mode means on disk: signal files and the mode's settings.

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

__all__ = ["basebackup_lsn_for", "copy_neon_signal", "mode_conf_lines", "write_signal_files"]


def mode_conf_lines(spec: spec_mod.ComputeSpec, *, neon: bool) -> list[str]:
    """Neon's mode block of ``postgresql.conf`` (``neon.compute_mode`` only on Neon storage)."""
    lines = [f"neon.compute_mode={spec.mode.type_name}"] if neon else []
    if spec.mode.kind == "Static":
        # hot_standby is on by default, but Neon is explicit about it.
        lines += ["hot_standby=on", f"recovery_target_lsn='{spec.mode.lsn}'"]
    elif spec.mode.kind == "Replica":
        lines.append("hot_standby=on")
    return lines


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
