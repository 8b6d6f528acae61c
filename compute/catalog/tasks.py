"""Run coroutines concurrently under a cap; the first failure cancels the rest and is
raised as itself (not wrapped in an ``ExceptionGroup``), so callers see one error that
names its phase and object. Used by ``observe`` and ``execute``; no I/O of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["bounded"]

T = TypeVar("T")
A = TypeVar("A")


async def bounded(func: Callable[[A], Awaitable[T]], items: Iterable[A], *, limit: int) -> list[T]:
    """``[await func(item) for item in items]``, at most ``limit`` at a time, in order."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(item: A) -> T:
        async with sem:
            return await func(item)

    try:
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(one(item)) for item in items]
    except BaseExceptionGroup as failed:
        first = failed.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in running]
