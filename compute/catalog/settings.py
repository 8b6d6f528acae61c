"""Settings as PostgreSQL sees them: definitions, what the conf files say, what waits
for a restart, and ``ALTER SYSTEM`` overrides of the settings compute_ctl manages.

- ``GucCache``: ``pg_settings`` rows (``gucs.Guc``), read once per server start, for
  ``check_values`` (a spec value PostgreSQL would refuse raises ``ConfigError``).
- ``inspect_conf``: reads ``pg_file_settings``, which parses the conf files as they are
  now and validates every value (check hooks included) without applying anything. The
  configurator calls it between writing ``postgresql.conf`` and reloading: an error on
  a line of ``postgresql.conf`` refuses the spec, and a managed setting whose winning
  line is in ``postgresql.auto.conf`` (``ALTER SYSTEM``) is an override.
- ``reset_overrides``: ``ALTER SYSTEM RESET`` of those names (the caller reloads).
- ``pending_restart``: names whose new value needs a restart (``pg_settings``).

The node writes the files and reloads; this module only reads, except the reset.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from compute_ctl.compute import errors
from compute_ctl.compute.catalog import db, gucs

__all__ = [
    "ConfReport",
    "GucCache",
    "check_values",
    "inspect_conf",
    "pending_restart",
    "reset_overrides",
]

logger = logging.getLogger(__name__)

AUTO_CONF = "postgresql.auto.conf"
# What pg_file_settings says of a valid, changed restart-only setting (and of a refused
# value): told apart by the setting's context.
_NOT_APPLIED = "setting could not be applied"
PHASE = "pending_restart"


async def pending_restart(*, connstr: str) -> list[str]:
    """Names of settings whose new value takes effect only after a restart, sorted.

    A failure raises ``ApplyError`` naming this phase, ``pg_settings`` and the cause."""
    async with db.connect(connstr) as conn:
        try:
            cur = await conn.execute(
                "SELECT s.name::text FROM pg_catalog.pg_settings s WHERE s.pending_restart "
                "ORDER BY s.name"
            )
            return [str(row[0]) for row in await cur.fetchall()]
        except psycopg.Error as e:
            state = f" (SQLSTATE {e.sqlstate})" if e.sqlstate else ""
            raise errors.ApplyError(
                f"{PHASE}: reading pg_settings failed: {e}{state}", phase=PHASE, obj="pg_settings"
            ) from e


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class GucCache:
    """``pg_settings`` definitions, read again only when the server (``key``) changes."""

    def __init__(self) -> None:
        self._key: object = None
        self._rows: dict[str, gucs.Guc] = {}

    async def rows(self, *, connstr: str, key: object) -> dict[str, gucs.Guc]:
        if key != self._key or not self._rows:
            async with db.connect(connstr) as conn:
                try:
                    cur = await conn.execute(
                        "SELECT name, vartype, context, unit, min_val, max_val, enumvals "
                        "FROM pg_catalog.pg_settings"
                    )
                    found = await cur.fetchall()
                except psycopg.Error as e:  # postgres went away under the read
                    raise errors.ApplyError(
                        f"reading setting definitions failed: {e}",
                        phase="setting_definitions",
                        obj="pg_settings",
                    ) from e
            self._rows = {
                str(r[0]).lower(): gucs.Guc(
                    name=str(r[0]),
                    vartype=str(r[1]),
                    context=str(r[2]),
                    unit=_text(r[3]),
                    min_val=_text(r[4]),
                    max_val=_text(r[5]),
                    enumvals=tuple(str(v) for v in r[6]) if isinstance(r[6], list) else (),
                )
                for r in found
            }
            self._key = key
        return self._rows


def check_values(
    definitions: dict[str, gucs.Guc], settings: Iterable[tuple[str, str | None]]
) -> None:
    """Raise ``ConfigError`` naming the first setting PostgreSQL would refuse.

    Names without a dot must exist (postgres refuses to start on an unknown one);
    dotted names are extensions' placeholders and are not checked.
    """
    for name, value in settings:
        guc = definitions.get(name.lower())
        if guc is None:
            if "." not in name:
                raise errors.ConfigError(f"setting {name}: unknown to this PostgreSQL")
            continue
        if value is None:
            continue
        problem = gucs.check(guc, value)
        if problem is not None:
            raise errors.ConfigError(problem)


@dataclasses.dataclass(frozen=True)
class ConfReport:
    refused: tuple[str, ...] = ()
    """Lines of ``postgresql.conf`` PostgreSQL refuses, as ``setting x: why``."""
    overrides: tuple[str, ...] = ()
    """Managed setting names whose value comes from ``postgresql.auto.conf``."""


async def inspect_conf(
    *, connstr: str, managed: Sequence[str], definitions: dict[str, gucs.Guc]
) -> ConfReport:
    """What PostgreSQL would make of its conf files now (nothing is applied)."""
    async with db.connect(connstr) as conn:
        cur = await conn.execute(
            "SELECT f.sourcefile, f.sourceline, f.name, f.applied, f.error, "
            "f.sourcefile = pg_catalog.current_setting('config_file') "
            "FROM pg_catalog.pg_file_settings f ORDER BY f.seqno"
        )
        rows = await cur.fetchall()
    wanted = {name.lower() for name in managed}
    refused: list[str] = []
    overrides: list[str] = []
    for sourcefile, line, name, applied, error, ours in rows:
        if ours and error is not None:
            guc = definitions.get(str(name).lower()) if name is not None else None
            if error == _NOT_APPLIED and guc is not None and guc.context == "postmaster":
                continue  # changed, valid as far as we can tell: reported as pending_restart
            what = f"setting {name}" if name is not None else f"postgresql.conf line {line}"
            refused.append(f"{what}: PostgreSQL refuses it ({error})")
        elif (
            applied
            and name is not None
            and str(name).lower() in wanted
            and str(sourcefile).endswith("/" + AUTO_CONF)
        ):
            overrides.append(str(name))
    return ConfReport(refused=tuple(refused), overrides=tuple(overrides))


async def reset_overrides(*, connstr: str, names: Sequence[str]) -> None:
    """``ALTER SYSTEM RESET`` each name; effective at the caller's next reload."""
    async with db.connect(connstr) as conn:
        for name in names:
            await conn.execute(
                sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(*name.split(".")))
            )
