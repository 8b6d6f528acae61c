"""Neon's flags that have no effect in this compute_ctl: accepted, and named in one warning.

Neon's ``compute_ctl`` accepts them, so a control plane or pod spec written for Neon
starts unchanged; but they drive things that exist only in a NeonVM image (swap resizing,
disk quotas) or in Databricks' Hadron build.
Each one set logs exactly one line saying it does nothing here. ``--http-port``
(Hadron) is implemented by ``cli``: external port = N, internal = N+1.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_hadron_flags", "ineffective", "warn_ineffective"]

logger = logging.getLogger(__name__)

_REASONS = {
    "resize_swap_on_bind": (
        "--resize-swap-on-bind",
        "swap is resized only inside a NeonVM (/neonvm/bin/resize-swap)",
    ),
    "set_disk_quota_for_fs": (
        "--set-disk-quota-for-fs",
        "disk quotas are set only inside a NeonVM (/neonvm/bin/set-disk-quota)",
    ),
    "pg_init_timeout": ("--pg-init-timeout", "a Hadron (Lakebase) setting"),
    "lakebase_mode": ("--lakebase-mode", "Hadron (Lakebase) mode is not implemented"),
}


def add_hadron_flags(parser: argparse.ArgumentParser) -> None:
    """Flags only Databricks' build of Neon's compute_ctl has."""
    parser.add_argument("--http-port", type=int, help="Hadron: external port N, internal port N+1")
    parser.add_argument("--pg-init-timeout", type=int, metavar="SECONDS", help="no effect")
    parser.add_argument(
        "--lakebase-mode",
        nargs="?",
        const="true",
        default="false",
        choices=("true", "false"),
        help="no effect",
    )


def ineffective(ns: argparse.Namespace) -> list[str]:
    """The warnings for the no-effect flags set in ``ns``, one line each."""
    lines = []
    for attr, (flag, reason) in _REASONS.items():
        value = getattr(ns, attr, None)
        if value in (None, False, "false"):
            continue
        lines.append(f"{flag} has no effect here: {reason}")
    return lines


def warn_ineffective(ns: argparse.Namespace) -> None:
    for line in ineffective(ns):
        logger.warning("%s", line)
