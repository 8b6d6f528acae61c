"""The concurrency cap of the per-database phase: never more than the limit at once, the
first failure cancels the rest and is raised as itself."""

from __future__ import annotations

import asyncio

import pytest

from compute_ctl.compute.catalog import tasks


async def test_bounded_never_exceeds_the_limit_and_keeps_order() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    started = asyncio.Condition()

    async def work(item: int) -> int:
        nonlocal running, peak
        async with started:
            running += 1
            peak = max(peak, running)
            started.notify_all()
        await release.wait()
        running -= 1
        return item * 2

    job = asyncio.create_task(tasks.bounded(work, range(10), limit=3))
    async with started:
        await started.wait_for(lambda: running == 3)
    for _ in range(5):  # let any excess task start, if the cap were broken
        await asyncio.sleep(0)
    assert running == 3
    release.set()
    assert await job == [i * 2 for i in range(10)]
    assert peak == 3


async def test_bounded_raises_the_first_error_and_cancels_the_rest() -> None:
    cancelled = []
    blocker = asyncio.Event()

    async def work(item: int) -> int:
        if item == 1:
            raise ValueError("item 1 failed")
        try:
            await blocker.wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    with pytest.raises(ValueError, match="item 1 failed"):
        await tasks.bounded(work, range(4), limit=4)
    assert sorted(cancelled) == [0, 2, 3]
