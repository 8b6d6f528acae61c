"""Log lines an attacker cannot flood or forge: ``clip``, ``RepeatFilter``, ``throttle``.

A peer that sends garbage fast makes the same line (often with a traceback) be logged
thousands of times a second: asyncio's and aiohttp's error logs, our 4xx lines, the
vm-monitor's "invalid message". ``RepeatFilter`` lets the first few records of each
(logger, level, message template) through per window, drops the rest, and reports how many
it dropped on the next record it lets through. Only the first record of a window keeps its
traceback.

``clip`` makes peer-controlled text safe to log: control characters (a ``%0d`` in a path
decodes to a carriage return) are escaped and the length is capped.

Used by the HTTP servers and the vm-monitor; it never touches handlers or formatters, so
the process's logging setup (``cli``) stays the one place that decides the output.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

__all__ = ["RepeatFilter", "clip", "throttle"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def clip(text: str, limit: int = 200) -> str:
    """``text`` with control characters escaped, cut to ``limit`` characters (marked)."""
    cut = text[:limit]
    safe = _CONTROL.sub(_escape, cut)
    return safe if len(text) <= limit else f"{safe}...({len(text)} chars)"


class RepeatFilter(logging.Filter):
    """At most ``burst`` records per (logger, level, template) every ``window`` seconds."""

    def __init__(
        self,
        *,
        burst: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        # key -> [window start, records seen in it, records dropped since last shown]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            dropped = int(entry[2]) if entry is not None else 0
            if entry is None and len(self._seen) >= 1000:
                self._forget(now)
            entry = self._seen[key] = [now, 0.0, float(dropped)]
        entry[1] += 1
        if entry[1] > self.burst:
            entry[2] += 1
            return False
        if entry[1] > 1:
            record.exc_info = None  # one traceback per window is enough
            record.exc_text = None
            record.stack_info = None
        if entry[2]:
            record.msg = f"{record.getMessage()} [{int(entry[2])} similar lines suppressed]"
            record.args = None
            entry[2] = 0
        return True

    def _forget(self, now: float) -> None:
        """Bound the table: templates are few, but logger names can come from anywhere."""
        for key in [k for k, v in self._seen.items() if now - v[0] >= self.window]:
            del self._seen[key]
        if len(self._seen) >= 1000:
            self._seen.clear()


# The loggers a remote peer can make noisy: asyncio's accept/transport errors, aiohttp's
# protocol errors, and the ones of our own that log per request or per message.
NOISY = (
    "asyncio",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.access",
    "aiohttp.websocket",
    "compute_ctl.compute.http",
    "compute_ctl.compute.http.app",
    "compute_ctl.compute.http.connections",
    "compute_ctl.compute.http.guards",
    "compute_ctl.compute.vm_monitor.dispatcher",
    "compute_ctl.compute.vm_monitor.runner",
    "compute_ctl.compute.vm_monitor.server",
)


def throttle(names: Iterable[str] = NOISY) -> None:
    """Put one ``RepeatFilter`` on each named logger (idempotent).

    A logger's filters see only the records logged on that very logger, hence the list.
    """
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in target.filters):
            target.addFilter(RepeatFilter())
