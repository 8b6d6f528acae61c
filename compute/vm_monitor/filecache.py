"""Sizing Neon's local file cache (LFC) to the memory the agent grants.

The size is a pure function of total memory (``FileCacheConfig.calculate_cache_size``,
upstream's on-disk defaults); it is applied over one PostgreSQL connection per agent
connection with ``ALTER SYSTEM SET neon.file_cache_size_limit = <MB>`` and
``SELECT pg_reload_conf()``, capped at ``neon.max_file_cache_size``.

The setting names are injectable (``Settings``) so tests can use placeholder settings on a
vanilla PostgreSQL. On a PostgreSQL without the settings, ``probe`` raises
``SettingMissing`` and the caller skips sizing. SQL is composed with psycopg's ``sql``
module only. This module neither decides *when* to resize nor knows about the agent.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import LiteralString

import psycopg
from psycopg import sql

from compute_ctl.compute import pgsession
from compute_ctl.compute.vm_monitor import errors

__all__ = ["FileCache", "FileCacheConfig", "MiB", "Settings"]

logger = logging.getLogger(__name__)

MiB = 1 << 20
_CONNECT_TIMEOUT = 3
APPLICATION_NAME = "compute_ctl:vm-monitor"


@dataclasses.dataclass(frozen=True)
class FileCacheConfig:
    """Upstream ``FileCacheConfig::default`` (the on-disk LFC)."""

    resource_multiplier: float = 0.75
    min_remaining_after_cache: int = 256 * MiB
    spread_factor: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.resource_multiplier < 1.0:
            raise ValueError("resource_multiplier must be between 0.0 and 1.0 exclusive")
        if self.spread_factor < 0.0:
            raise ValueError("spread_factor must be >= 0")
        if self.min_remaining_after_cache <= 0:
            raise ValueError("min_remaining_after_cache must be > 0")
        if self.resource_multiplier * (self.spread_factor + 1.0) >= 1.0:
            raise ValueError("incompatible resource_multiplier and spread_factor")

    def calculate_cache_size(self, total: int) -> int:
        """Bytes of LFC for ``total`` bytes of memory, rounded down to a whole MiB.

        min((total - 256 MiB) / 1.1, 0.75 * total): the spread term wins below ~1463 MiB.
        """
        available = max(0, total - self.min_remaining_after_cache)
        if available == 0:
            return 0
        from_spread = max(0, int(available / (1.0 + self.spread_factor)))
        from_multiplier = int(total * self.resource_multiplier)
        return min(from_spread, from_multiplier) // MiB * MiB


@dataclasses.dataclass(frozen=True)
class Settings:
    """The GUC names: Neon's by default; tests use placeholders on vanilla PostgreSQL."""

    limit: str = "neon.file_cache_size_limit"
    max: str = "neon.max_file_cache_size"


def _guc(name: str) -> sql.Composable:
    """A (possibly dotted) setting name as an identifier: ``"neon"."file_cache_size_limit"``."""
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


class FileCache:
    """One connection to the local postgres, used only to read and set the LFC size."""

    def __init__(
        self,
        conn: pgsession.Connection,
        *,
        connstr: str,
        settings: Settings,
        config: FileCacheConfig,
    ) -> None:
        self._conn = conn
        self._connstr = connstr
        self.settings = settings
        self.config = config

    @classmethod
    async def connect(
        cls, connstr: str, *, settings: Settings, config: FileCacheConfig
    ) -> FileCache:
        return cls(await cls._open(connstr), connstr=connstr, settings=settings, config=config)

    @staticmethod
    async def _open(connstr: str) -> pgsession.Connection:
        try:
            return await pgsession.open_session(
                connstr, application_name=APPLICATION_NAME, timeout=_CONNECT_TIMEOUT
            )
        except (psycopg.Error, OSError, TimeoutError) as e:
            # The message names host and user but never the password (libpq omits it).
            raise errors.FileCacheError(f"failed to connect to postgres file cache: {e}") from e

    async def close(self) -> None:
        await self._conn.close()

    async def _read(self, query: sql.Composed) -> object:
        """One value, with one reconnect and retry (reads only, as upstream)."""
        try:
            return await self._fetch(query)
        except psycopg.Error as e:
            logger.warning("postgres error, reconnecting and retrying once: %s", e)
        await self._conn.close()
        self._conn = await self._open(self._connstr)
        try:
            return await self._fetch(query)
        except psycopg.Error as e:
            raise errors.FileCacheError(f"failed to execute query a second time: {e}") from e

    async def _fetch(self, query: sql.Composed) -> object:
        cur = await self._conn.execute(query)
        row = await cur.fetchone()
        if row is None:
            raise errors.FileCacheError("query returned no rows")
        return row[0]

    async def probe(self) -> None:
        """Raise ``SettingMissing`` unless both settings exist on this PostgreSQL."""
        for name in (self.settings.limit, self.settings.max):
            query = sql.SQL("SELECT current_setting({}, true) IS NOT NULL").format(
                sql.Literal(name)
            )
            if not await self._read(query):
                raise errors.SettingMissing(name)

    async def _size_bytes(self, name: str) -> int:
        query = sql.SQL("SELECT pg_size_bytes(current_setting({}))").format(sql.Literal(name))
        value = await self._read(query)
        if not isinstance(value, int):
            raise errors.FileCacheError(f"{name} did not read as a size: {value!r}")
        return value

    async def get_size(self) -> int:
        """The current limit in bytes (for logging: MB-unit settings read back with units)."""
        return await self._size_bytes(self.settings.limit)

    async def set_size(self, num_bytes: int) -> int:
        """Set the limit to ``num_bytes`` (capped at the max, whole MiB); return what was set."""
        max_bytes = await self._size_bytes(self.settings.max)
        num_mb = min(num_bytes, max_bytes) // MiB
        logger.info(
            "updating file cache size to %d MiB%s, max size = %d MiB",
            num_mb,
            " (capped by maximum size)" if num_bytes > max_bytes else "",
            max_bytes // MiB,
        )
        # A bare integer of MB: upstream found bound parameters do not work for ALTER SYSTEM.
        alter = sql.SQL("ALTER SYSTEM SET {} = {}").format(
            _guc(self.settings.limit), sql.Literal(num_mb)
        )
        reload: LiteralString = "SELECT pg_reload_conf()"
        try:
            await self._conn.execute(alter)
            await self._conn.execute(reload)
        except psycopg.Error as e:
            raise errors.FileCacheError(f"failed to change file cache size limit: {e}") from e
        return num_mb * MiB
