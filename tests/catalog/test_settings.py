"""pending_restart names the settings whose new value waits for a restart."""

from __future__ import annotations

import time

import pytest

from compute_ctl.compute.catalog import settings
from tests import pgserver
from tests.catalog.conftest import execute, fetch

pytestmark = pytest.mark.postgres


def wait_for_pending(server: pgserver.PgServer, *, expected: bool) -> None:
    deadline = time.monotonic() + 10
    query = "select pending_restart from pg_settings where name = 'max_prepared_transactions'"
    while fetch(server.dsn(), query) != [(expected,)]:
        assert time.monotonic() < deadline, "the reload did not take effect"
        time.sleep(0.01)


async def test_pending_restart_lists_names(catalog_server: pgserver.PgServer) -> None:
    assert await settings.pending_restart(connstr=catalog_server.dsn()) == []
    execute(
        catalog_server.dsn(),
        "ALTER SYSTEM SET max_prepared_transactions = 17",
        "ALTER SYSTEM SET work_mem = '7MB'",  # reloadable: never pending
        "select pg_reload_conf()",
    )
    try:
        wait_for_pending(catalog_server, expected=True)
        assert await settings.pending_restart(connstr=catalog_server.dsn()) == [
            "max_prepared_transactions"
        ]
    finally:
        # Setting it back to the running value clears the flag (RESET would not:
        # removing a restart-only setting from the file is itself pending a restart).
        execute(
            catalog_server.dsn(),
            "ALTER SYSTEM SET max_prepared_transactions = 0",
            "ALTER SYSTEM RESET work_mem",
            "select pg_reload_conf()",
        )
        wait_for_pending(catalog_server, expected=False)
    assert await settings.pending_restart(connstr=catalog_server.dsn()) == []
