"""Failpoints: named places in the code where tests can hold, fail or delay the compute.

Off unless compute_ctl starts with ``--failpoints`` (or env ``FAILPOINTS`` is set, as in
Neon's testing builds). A failpoint is set with an action:

- ``off``: pass through (the default);
- ``pause``: wait at the point until the failpoint is set to something else;
- ``return`` / ``return(msg)``: raise ``FailpointError`` there;
- ``sleep(ms)``: delay.

``FAILPOINTS="name=action;name2=action"`` sets them at start; ``POST /failpoints`` with
``[{"name": ..., "actions": ...}]`` sets them at run time (Neon's shape). ``hit(name)``
is the only call production code makes, and it costs one dict lookup when disabled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

__all__ = ["FailpointError", "Failpoints", "parse_action"]

_ACTION_RE = re.compile(r"^(off|pause|return|sleep)(?:\((.*)\))?$")


class FailpointError(RuntimeError):
    """Raised where a failpoint set to ``return`` is hit."""


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str
    arg: str | None = None


def parse_action(text: str) -> Action:
    match = _ACTION_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid failpoint action {text!r}")
    kind, arg = match.group(1), match.group(2)
    if kind == "sleep" and (arg is None or not arg.isdigit()):
        raise ValueError("sleep needs milliseconds, e.g. sleep(100)")
    return Action(kind=kind, arg=arg)


class Failpoints:
    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self._actions: dict[str, Action] = {}
        self._changed = asyncio.Event()
        self.hits: dict[str, int] = {}
        self.waiting: set[str] = set()

    @classmethod
    def from_env(cls, value: str | None, *, enabled: bool) -> Failpoints:
        fps = cls(enabled=enabled or bool(value))
        for item in filter(None, (value or "").split(";")):
            name, _, action = item.partition("=")
            fps.set(name.strip(), action)
        return fps

    def set(self, name: str, action: str) -> None:
        if not self.enabled:
            raise RuntimeError("failpoints are disabled (start with --failpoints)")
        parsed = parse_action(action)
        if parsed.kind == "off":
            self._actions.pop(name, None)
        else:
            self._actions[name] = parsed
        # Wake paused points; they re-read their action.
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, name: str) -> str:
        action = self._actions.get(name)
        if action is None:
            return "off"
        return action.kind if action.arg is None else f"{action.kind}({action.arg})"

    async def hit(self, name: str) -> None:
        if not self.enabled:
            return
        self.hits[name] = self.hits.get(name, 0) + 1
        while True:
            action = self._actions.get(name)
            if action is None:
                return
            if action.kind == "pause":
                self.waiting.add(name)
                try:
                    await self._changed.wait()
                finally:
                    self.waiting.discard(name)
                continue
            if action.kind == "sleep":
                await asyncio.sleep(int(action.arg or 0) / 1000)
                return
            raise FailpointError(action.arg or f"failpoint {name} triggered")
