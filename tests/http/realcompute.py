"""A real compute_ctl process for the HTTP tier: ``tests.support``'s, under the compute id
the tier's tokens name."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from tests.support import compute_process

COMPUTE_ID = "compute-under-test"


@contextlib.contextmanager
def compute_ctl(
    *,
    jwks: Sequence[dict[str, Any]] = (),
    allow_unauthenticated: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> Iterator[compute_process.ComputeProcess]:
    """``compute_process.running_compute`` with this tier's compute id."""
    with compute_process.running_compute(
        jwks=jwks,
        allow_unauthenticated=allow_unauthenticated,
        extra_args=extra_args,
        compute_id=COMPUTE_ID,
        timeout=timeout,
    ) as compute:
        yield compute
