"""The installed-extensions report: Neon's ``installed_extensions.rs``.

``collect`` lists the databases that accept connections and are valid (``datallowconn``
and ``datconnlimit <> -2``, at most 500) and reads ``pg_extension`` in each, one session
per database; the result counts, per (name, version, owned by the bootstrap superuser),
the databases holding that combination. ``report`` sets the gauge
``compute_installed_extensions{extension_name,version,owned_by_superuser}`` and logs
``[NEON_EXT_STAT] {"extensions": [...]}``; any error aborts the whole collection, is
logged as ``could not get installed extensions: ...`` and leaves the gauge as it was.

``run_periodically`` is Neon's schedule: sleep first, then collect; the sleep is
``max(previous sleep, 2 * interval)``, so it never shrinks. The node reads the interval
through a callable because ``/configure`` changes it (``interval_from_spec``).

Differences from Neon, on purpose:
- a successful collection replaces the gauge's series (Neon never resets it, so an
  extension dropped everywhere kept being reported until the process exited);
- ``suspend_timeout_seconds`` of -1 or 0 falls back to ``--installed-extensions-collection-
  interval`` (Neon uses a constant 3600 there and the flag is then ignored).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import db

__all__ = ["BOOTSTRAP_SUPERUSER_OID", "Key", "collect", "interval_from_spec", "report"]

logger = logging.getLogger(__name__)

BOOTSTRAP_SUPERUSER_OID = 10
Key = tuple[str, str, str]
"""(extension name, version, owned_by_superuser ``"1"``/``"0"``)."""

_DATABASES_SQL = (
    "SELECT datname FROM pg_catalog.pg_database"
    " WHERE datallowconn AND datconnlimit OPERATOR(pg_catalog.<>) -2 LIMIT 500"
)
_EXTENSIONS_SQL = (
    "SELECT extname, extversion, extowner::pg_catalog.int4 FROM pg_catalog.pg_extension"
)


async def collect(connstr: str) -> dict[Key, int]:
    """Databases per (extension, version, owned_by_superuser); raises on any error."""
    async with db.connect(connstr) as conn:
        cur = await conn.execute(_DATABASES_SQL)
        names = [str(row[0]) for row in await cur.fetchall()]
    counts: collections.Counter[Key] = collections.Counter()
    for name in names:
        async with db.connect(connstr, dbname=name) as conn:
            cur = await conn.execute(_EXTENSIONS_SQL)
            for extname, version, owner in await cur.fetchall():
                owned = "1" if owner == BOOTSTRAP_SUPERUSER_OID else "0"
                counts[(str(extname), str(version), owned)] += 1
    return dict(counts)


async def report(*, connstr: str, metrics: metrics_mod.Metrics) -> None:
    """Collect, then set the gauge and log the stat line; errors are only logged."""
    try:
        counts = await collect(connstr)
    except Exception as e:
        logger.warning("could not get installed extensions: %s", e)
        return
    metrics.installed_extensions.clear()
    metrics.set_installed_extensions(counts.items())
    stat = {
        "extensions": [
            {"extname": n, "version": v, "n_databases": c, "owned_by_superuser": o}
            for (n, v, o), c in sorted(counts.items())
        ]
    }
    logger.info("[NEON_EXT_STAT] %s", json.dumps(stat))


def interval_from_spec(spec: spec_mod.ComputeSpec, *, default: int) -> int:
    """Seconds between collections: ``suspend_timeout_seconds``, or ``default`` for -1/0."""
    if spec.suspend_timeout_seconds in (-1, 0):
        return default
    return max(1, spec.suspend_timeout_seconds)


async def run_periodically(
    *, connstr: str, metrics: metrics_mod.Metrics, interval: Callable[[], float]
) -> None:
    """Until cancelled: sleep ``max(previous, 2 * interval())``, then ``report``."""
    sleep = 0.0
    while True:
        sleep = max(sleep, 2.0 * interval())
        await asyncio.sleep(sleep)
        await report(connstr=connstr, metrics=metrics)
