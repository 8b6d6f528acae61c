"""Fixtures shared by every test tier: real PostgreSQL servers and scratch directories."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pgserver


@pytest.fixture(scope="session")
def pg_session() -> Iterator[pgserver.PgServer]:
    """One vanilla PostgreSQL for the whole session (tests must clean up their objects)."""
    server = pgserver.PgServer.create()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg() -> Iterator[pgserver.PgServer]:
    """A fresh vanilla PostgreSQL for one test."""
    server = pgserver.PgServer.create()
    try:
        yield server
    finally:
        server.stop()
