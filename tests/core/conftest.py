"""Fixtures for core's tests: scratch directories postgres can reach, and nodes run in-process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver
from tests.core import helpers
from tests.support.compute_process import ComputeProcess


@pytest.fixture
def procs() -> Iterator[list[ComputeProcess]]:
    """compute_ctl processes a test started: killed at its end, with any postgres left."""
    started: list[ComputeProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()
        for proc in started:
            for pid in helpers.processes_in(proc.pgdata):
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = pgserver.scratch_dir("core-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
