"""The vm-monitor's error tree (the bridge between the autoscaler-agent and this compute).

::

    MonitorError            root: anything the monitor raises on purpose
    ├── HandshakeError      the agent's version range was unreadable or does not overlap ours
    ├── ConnectionClosed    the agent's websocket went away while we were using it
    ├── CgroupError         memory figures could not be read from the cgroup
    ├── StaleFigures        the latest memory figures are too old to decide on
    └── FileCacheError      a local file cache query failed (the SQL error is chained)
        └── SettingMissing  this PostgreSQL has no such setting (no neon extension)

A ``MonitorError`` raised while handling a request becomes an ``InternalError`` reply with
the request's id; the connection stays up. Anything else is a bug and ends the connection.
This module holds types only.
"""

from __future__ import annotations

__all__ = [
    "CgroupError",
    "ConnectionClosed",
    "FileCacheError",
    "HandshakeError",
    "MonitorError",
    "SettingMissing",
    "StaleFigures",
]


class MonitorError(Exception):
    """Root of every error the vm-monitor raises on purpose."""


class HandshakeError(MonitorError):
    """The protocol handshake failed; the connection is closed."""


class ConnectionClosed(MonitorError):
    """The agent's websocket closed (or broke) under us."""


class CgroupError(MonitorError):
    """The cgroup's memory.stat is missing, unreadable or lacks the anonymous-memory keys."""


class StaleFigures(MonitorError):
    """The memory figures are older than the staleness limit: an error, not a guess."""


class FileCacheError(MonitorError):
    """A query against the local file cache settings failed."""


class SettingMissing(FileCacheError):
    """The file cache setting does not exist on this PostgreSQL."""

    def __init__(self, name: str) -> None:
        super().__init__(f"setting {name} does not exist on this PostgreSQL")
        self.name = name
