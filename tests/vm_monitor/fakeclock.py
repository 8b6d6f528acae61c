"""A manual clock for the vm-monitor's decisions (``vm_monitor.clock.Clock``).

``await clock.advance(dt)`` moves time forward, wakes every sleeper whose deadline has
passed, and returns only once each woken task has gone back to sleep (or finished). So
after ``advance(0.1)`` the cgroup watcher has taken exactly one more sample and handed it
to the runner: tests step time deterministically and never sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses

__all__ = ["FakeClock"]

_EPSILON = 1e-9  # 0.1 added ten times is not 1.0; ticks must not slip for that


@dataclasses.dataclass(eq=False)
class _Sleeper:
    deadline: float
    future: asyncio.Future[None]
    task: asyncio.Task[object]


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[_Sleeper] = []
        self._awake: set[asyncio.Task[object]] = set()
        self._settled = asyncio.Event()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._back_to_sleep(task)
        if deadline <= self._now + _EPSILON:
            return
        sleeper = _Sleeper(deadline, asyncio.get_running_loop().create_future(), task)
        self._sleepers.append(sleeper)
        try:
            await sleeper.future
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    async def advance(self, seconds: float, *, timeout: float = 5.0) -> None:
        self._now += seconds
        due = [s for s in self._sleepers if s.deadline <= self._now + _EPSILON]
        for sleeper in due:
            self._sleepers.remove(sleeper)
            if sleeper.task.done():
                continue
            self._awake.add(sleeper.task)
            sleeper.task.add_done_callback(self._back_to_sleep)
            sleeper.future.set_result(None)
        async with asyncio.timeout(timeout):
            while self._awake:
                self._settled.clear()
                await self._settled.wait()

    def _back_to_sleep(self, task: asyncio.Task[object]) -> None:
        if task in self._awake:
            self._awake.discard(task)
            self._settled.set()
