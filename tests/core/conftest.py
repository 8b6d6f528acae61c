"""Fixtures for core's tests: scratch directories postgres can reach, and nodes run in-process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = pgserver.scratch_dir("core-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
