"""Fixtures for the Neon-parity tests: one plain PostgreSQL per module, scratch dirs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver


@pytest.fixture(scope="module")
def pg() -> Iterator[pgserver.PgServer]:
    with pgserver.running() as server:
        yield server


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = pgserver.scratch_dir("parity-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
