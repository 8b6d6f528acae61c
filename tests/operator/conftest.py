"""Fixtures of the kmock tier: the emulated API, a real compute_ctl, the operator process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.operator import emulator, harness


@pytest.fixture
async def api(kmock: emulator.Emulator) -> AsyncIterator[harness.Api]:
    """kmock (``emulator.Emulator`` where a test module marks it so), as a user drives it."""
    emulator.declare(kmock)
    async with aiohttp.ClientSession() as session:
        yield harness.Api(kmock, session)


@pytest.fixture
def compute() -> Iterator[harness.Compute]:
    with harness.Compute.running() as running:
        yield running


@pytest.fixture
async def sidecar(api: harness.Api, compute: harness.Compute) -> AsyncIterator[harness.Operator]:
    """The operator process, pointed at kmock and at the compute's external API (JWT)."""
    await compute.wait_listening(api.session)
    try:
        async with harness.Operator.running(
            api_url=api.base,
            compute_url=compute.url,
            key_file=compute.keys.private,
            workdir=compute.workdir,
        ) as running:
            yield running
    finally:
        # Shown by pytest only when the test fails.
        print("--- operator log ---\n" + running.log_tail())
        print("--- compute_ctl log ---\n" + compute.log_tail())
