"""The one way a tier whose parts must be built (Go binaries, images) gets them.

A tier builds right after collection, outside every test's timeout, and only when a
collected test carries its marker; a failure there is logged, and the tier's session
fixture then skips every test with the one-line reason. ``tests/apiserver`` and
``tests/cluster`` use it with their own ``toolchain`` module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pytest

__all__ = ["build_after_collection", "built_or_skip"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def build_after_collection(
    session: pytest.Session, *, marker: str, build: Callable[[], object], tier: str
) -> None:
    """Build (or find cached) the parts when a collected test is marked ``marker``."""
    if any(item.get_closest_marker(marker) for item in session.items):
        try:
            build()  # cached afterwards
        except Exception as e:
            log.warning("%s unavailable: %s", tier, e)


def built_or_skip(build: Callable[[], T], unavailable: type[Exception]) -> T:
    """The parts, or the test skipped with the reason they cannot be had."""
    try:
        return build()
    except unavailable as e:
        pytest.skip(str(e))
