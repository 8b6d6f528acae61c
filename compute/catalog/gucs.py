"""Would PostgreSQL accept this setting value? Checked against its own ``pg_settings`` row.

``Guc`` is one ``pg_settings`` row (vartype, unit, min/max, enum values, context);
``check`` answers for one value the way PostgreSQL's ``parse_bool``/``parse_int``/
``parse_real``/``config_enum_lookup_by_name`` would, so a spec PostgreSQL would refuse
is answered 400 before ``postgresql.conf`` is written (a refused line is otherwise
ignored at reload, and the old value silently stays: Neon reports success then).

What this cannot see (check hooks of string settings) the configurator catches through
``pg_file_settings`` before it reloads (``settings.inspect_conf``). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["Guc", "check"]


@dataclasses.dataclass(frozen=True)
class Guc:
    name: str
    vartype: str  # bool, integer, real, string, enum
    context: str
    unit: str | None = None
    min_val: str | None = None
    max_val: str | None = None
    enumvals: tuple[str, ...] = ()


_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off")
_MEMORY_BYTES = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_MS = {
    "us": 0.001,
    "ms": 1.0,
    "s": 1000.0,
    "min": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
}
_BASE_BYTES = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1024**2}
_BASE_MS = {"ms": 1.0, "s": 1000.0, "min": 60_000.0}
# Values PostgreSQL accepts but ``pg_settings.enumvals`` hides (PG 15's guc.c tables).
_HIDDEN_ENUM = {"wal_level": ("archive", "hot_standby")}
_NUMBER_RE = re.compile(
    r"\s*([-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))\s*([A-Za-z]*)\s*"
)


def _parse_bool(value: str) -> bool:
    """PostgreSQL's ``parse_bool``: a word or a unique prefix of one, 1 or 0."""
    lowered = value.strip().lower()
    if lowered in ("1", "0"):
        return True
    if lowered in ("o",):  # "on" or "off": ambiguous
        return False
    return bool(lowered) and any(word.startswith(lowered) for word in _BOOL_WORDS)


def _number(guc: Guc, value: str) -> float | str:
    """The value in the setting's base unit, or an error text."""
    match = _NUMBER_RE.fullmatch(value)
    if match is None:
        return f"{value!r} is not a number"
    text, unit = match.groups()
    number = float(int(text, 0)) if "x" in text.lower() else float(text)
    if math.isnan(number) or math.isinf(number):
        return f"{value!r} is not a number"
    if not unit:
        return number
    base = guc.unit or ""
    if base in _BASE_BYTES and unit in _MEMORY_BYTES:
        return number * _MEMORY_BYTES[unit] / _BASE_BYTES[base]
    if base in _BASE_MS and unit in _TIME_MS:
        return number * _TIME_MS[unit] / _BASE_MS[base]
    if base in _BASE_BYTES:
        return f"invalid unit {unit!r}: valid units are B, kB, MB, GB and TB"
    if base in _BASE_MS:
        return f"invalid unit {unit!r}: valid units are us, ms, s, min, h and d"
    return f"{value!r} takes no unit"


def _range(guc: Guc, number: float, value: str) -> str | None:
    low = float(guc.min_val) if guc.min_val not in (None, "") else None
    high = float(guc.max_val) if guc.max_val not in (None, "") else None
    if (low is not None and number < low) or (high is not None and number > high):
        unit = f" {guc.unit}" if guc.unit else ""
        return f"{value!r} is outside the valid range {guc.min_val}..{guc.max_val}{unit}"
    return None


def _enum_ok(guc: Guc, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in (v.lower() for v in guc.enumvals):
        return True
    if lowered in _HIDDEN_ENUM.get(guc.name, ()):
        return True
    if "debug2" in guc.enumvals and lowered == "debug":  # message levels: debug = debug2
        return True
    # Enums with on/off take the other boolean spellings too (hidden in enumvals).
    return {"on", "off"} <= set(guc.enumvals) and _parse_bool(lowered)


def check(guc: Guc, value: str) -> str | None:
    """Why PostgreSQL would refuse ``value`` for ``guc``, naming the setting; or None."""
    problem: str | None = None
    if guc.vartype == "bool":
        if not _parse_bool(value):
            problem = f"{value!r} is not a boolean"
    elif guc.vartype in ("integer", "real"):
        number = _number(guc, value)
        if isinstance(number, str):
            problem = number
        else:
            if guc.vartype == "integer":
                number = float(round(number))
            problem = _range(guc, number, value)
    elif guc.vartype == "enum" and not _enum_ok(guc, value):
        problem = f"{value!r} is not one of {', '.join(guc.enumvals)}"
    if problem is None:
        return None
    return f"setting {guc.name}: {problem}"
