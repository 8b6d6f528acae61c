"""Audit logging (``spec.audit_log_level``): Neon's pgaudit conf block and SQL steps.

- ``conf_lines``: the block ``postgresql.conf`` carries after the spec's settings (so
  users cannot override it). Base (and the deprecated Log) audits DDL and role changes
  with ``pgaudit``; Extended (and the deprecated Hipaa) and Full audit everything
  (Extended without ``misc``, Full with statement parameters) and add
  ``pgauditlogtofile``, which writes ``<pgdata>/log/audit-*.log`` (its defaults;
  ``pgaudit.log_rotation_age=5`` minutes). ``shared_preload_libraries`` is the spec's
  value with the missing libraries appended.
- ``apply_sql``: after the catalog apply (Primary start and reconfigure), create the
  extensions in ``public`` and exclude the ``postgres`` database from auditing
  (``ALTER DATABASE postgres SET pgaudit.log TO 'none'``), as it serves compute_ctl and
  monitors; compute_ctl's own sessions also send ``pgaudit.log=none`` (``catalog.db``).
  Disabled does nothing, and lowering the level later undoes nothing (Neon).

Difference from Neon: with no ``shared_preload_libraries`` in the spec, Neon preloads
``neon,...``; without Neon storage (vanilla PostgreSQL has no ``neon`` library, and
postgres would refuse to start) we preload only the audit libraries.

- ``start_shipping``: for the file-writing levels, before postgres starts, the rsyslog
  drop-in that ships the files to ``AUDIT_LOGGING_[TLS_]ENDPOINT`` and a restart of
  rsyslogd (``audit_ship``; a failure fails the start, as Neon's).
- ``watch_log_dir``: for the file-writing levels, every 60 s, delete the audit files not
  written to for 15 minutes (``audit_ship.collect_garbage``), then set the gauge
  ``compute_audit_log_dir_size`` (bytes of the regular files in ``<pgdata>/log`` whose name
  ends in ``log``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from compute_ctl.compute import audit_ship, errors
from compute_ctl.compute import spec as spec_mod

if TYPE_CHECKING:  # pgconf imports this module: keep psycopg off the conf-rendering path
    from psycopg import sql

    from compute_ctl.compute import metrics as metrics_mod

__all__ = [
    "apply_sql",
    "conf_lines",
    "is_compliance",
    "log_dir_size",
    "start_shipping",
    "watch_log_dir",
]

L = spec_mod.AuditLogLevel
_BASE = (L.LOG, L.BASE)
_COMPLIANCE = (L.HIPAA, L.EXTENDED, L.FULL)


def is_compliance(level: spec_mod.AuditLogLevel) -> bool:
    """Extended, Full (and Hipaa): the levels that write audit files."""
    return level in _COMPLIANCE


def _preload(spec: spec_mod.ComputeSpec, libraries: tuple[str, ...]) -> str:
    value = spec.cluster.setting("shared_preload_libraries")
    if value is None:
        base = ["neon"] if spec.has_neon_storage() else []
        return ",".join([*base, *libraries])
    for lib in libraries:
        if lib not in value:  # Neon's substring test
            value = f"{value},{lib}"
    return value


def conf_lines(spec: spec_mod.ComputeSpec) -> list[str]:
    """The audit block of ``postgresql.conf`` (empty when Disabled)."""
    from compute_ctl.compute import pgconf  # pgconf imports this module

    level = spec.audit_log_level
    if level in _BASE:
        preload = _preload(spec, ("pgaudit",))
        return [
            "# Managed by compute_ctl base audit settings: start",
            "pgaudit.log='ddl,role'",
            "pgaudit.log_catalog=off",
            f"shared_preload_libraries={pgconf.escape_conf_value(preload)}",
            "# Managed by compute_ctl base audit settings: end",
        ]
    if level in _COMPLIANCE:
        if level is L.FULL:
            what = ["pgaudit.log_parameter=on", "pgaudit.log='all'"]
        else:
            what = ["pgaudit.log_parameter=off", "pgaudit.log='all, -misc'"]
        preload = _preload(spec, ("pgaudit", "pgauditlogtofile"))
        return [
            "# Managed by compute_ctl compliance audit settings: begin",
            *what,
            "pgaudit.log_catalog=off",
            "pgaudit.log_rotation_age=5",
            f"shared_preload_libraries={pgconf.escape_conf_value(preload)}",
            "# Managed by compute_ctl compliance audit settings: end",
        ]
    return []


def statements(level: spec_mod.AuditLogLevel) -> list[sql.SQL]:
    """Neon's audit phases, in order (none when Disabled)."""
    if level not in _BASE and level not in _COMPLIANCE:
        return []
    from psycopg import sql

    steps: list[sql.SQL] = [sql.SQL("CREATE EXTENSION IF NOT EXISTS pgaudit WITH SCHEMA public")]
    if level in _COMPLIANCE:
        steps.append(sql.SQL("CREATE EXTENSION IF NOT EXISTS pgauditlogtofile WITH SCHEMA public"))
    steps.append(sql.SQL("ALTER DATABASE postgres SET pgaudit.log TO 'none'"))
    return steps


async def apply_sql(*, connstr: str, level: spec_mod.AuditLogLevel) -> None:
    """Run ``statements(level)`` on the maintenance database (idempotent)."""
    steps = statements(level)
    if not steps:
        return
    import psycopg

    from compute_ctl.compute.catalog import db

    async with db.connect(connstr) as conn:
        for statement in steps:
            try:
                await conn.execute(statement)
            except psycopg.Error as e:
                raise errors.ApplyError(
                    f"audit logging ({level.value}): {e}", phase="audit", obj="pgaudit"
                ) from e


def log_dir_size(pgdata: Path) -> int:
    """Bytes in ``<pgdata>/log`` files whose name ends in ``log`` (Neon's measure).

    Regular files only, and ``log`` itself not through a link: PGDATA is the postgres
    user's, and the gauge must not tell the size of files only root can see."""
    total = 0
    try:
        fd = os.open(pgdata / "log", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none yet, or a link
        return 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.name.endswith("log") and entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:  # rotated away meanwhile
                    continue
    finally:
        os.close(fd)
    return total


async def start_shipping(
    settings: audit_ship.Settings, spec: spec_mod.ComputeSpec, *, pgdata: Path
) -> None:
    """Ship ``<pgdata>/log`` with rsyslog, the files labelled with the spec's ids."""
    await audit_ship.configure(
        settings, pgdata=pgdata, endpoint_id=spec.endpoint_id, project_id=spec.project_id
    )


def _collect(pgdata: Path) -> int:
    audit_ship.collect_garbage(pgdata / "log")
    return log_dir_size(pgdata)


async def watch_log_dir(
    *, pgdata: Path, metrics: metrics_mod.Metrics, interval: float = 60.0
) -> None:
    """Until cancelled, now and every ``interval``: delete the audit files older than 15
    minutes, then set ``compute_audit_log_dir_size``."""
    while True:
        metrics.audit_log_dir_size.set(await asyncio.to_thread(_collect, pgdata))
        await asyncio.sleep(interval)
