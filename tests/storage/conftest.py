"""Fixtures of the storage tier: the basebackup archive and the Neon bin stand-in."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.storage import archive, neonbin


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
