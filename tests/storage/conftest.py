"""Fixtures of the storage tier: the basebackup archive, the Neon bin stand-in, a node's
PGDATA path and a compute's process layer (``compute.Compute``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver
from tests.storage import archive, neonbin
from tests.storage.compute import Compute


@pytest.fixture(scope="session")
def pgdata_archive() -> bytes:
    """A gzip tar of a real initdb'ed PGDATA holding a marker row (made once)."""
    return archive.make_pgdata_archive()


@pytest.fixture
def neon_bin() -> Iterator[neonbin.NeonBin]:
    made = neonbin.NeonBin.create()
    try:
        yield made
    finally:
        shutil.rmtree(made.bindir.parent, ignore_errors=True)


@pytest.fixture
def pgdata() -> Iterator[Path]:
    """Where a node's PGDATA goes (not created: the node makes it)."""
    base = pgserver.scratch_dir("node-storage-")
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def compute() -> Iterator[Compute]:
    """A compute's process layer over a fresh PGDATA, removed afterwards."""
    made = Compute.create()
    try:
        yield made
    finally:
        made.remove()
