"""Fixtures shared by every test tier: real PostgreSQL servers and scratch directories."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests import pgserver


@pytest.fixture(scope="session")
def pg_session() -> Iterator[pgserver.PgServer]:
    """One vanilla PostgreSQL for the whole session (tests must clean up their objects)."""
    with pgserver.running() as server:
        yield server


@pytest.fixture
def pg() -> Iterator[pgserver.PgServer]:
    """A fresh vanilla PostgreSQL for one test."""
    with pgserver.running() as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the scratch directories some test or fixture did not remove (a leak to fix),
    then remove them so they do not pile up in /tmp."""
    left = pgserver.leftovers()
    if not left:
        return
    terminalreporter.write_sep("=", f"{len(left)} scratch directories left behind", yellow=True)
    for path in left:
        terminalreporter.write_line(str(path))
        shutil.rmtree(path, ignore_errors=True)
