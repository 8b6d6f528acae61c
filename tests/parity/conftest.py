"""Fixtures for the Neon-parity tests: one plain PostgreSQL per module, scratch dirs."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver


@pytest.fixture(scope="module")
def pg() -> Iterator[pgserver.PgServer]:
    with pgserver.running() as server:
        yield server


@contextlib.contextmanager
def _scratch_dir(prefix: str) -> Iterator[Path]:
    path = pgserver.scratch_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with _scratch_dir("parity-") as path:
        yield path


@pytest.fixture(scope="module")
def module_scratch() -> Iterator[Path]:
    """A scratch directory for a module's shared compute."""
    with _scratch_dir("parity-mod-") as path:
        yield path
