"""The admin console's RELOAD is bounded: a pgbouncer (or anything on its port) that
accepts the connection and never answers must not hold the sidecars' configure lock
forever (every later configure would wait behind it)."""

from __future__ import annotations

import asyncio

import pytest

from compute_ctl.compute import pgbouncer
from tests.storage import wire


class Silent(wire.WireServer):
    """Authenticates, then never answers a query."""

    async def handle_query(self, session: wire.Session, query: str) -> None:
        self.queries.append(query)
        await asyncio.Event().wait()


async def test_a_silent_admin_console_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbouncer, "_RELOAD_TIMEOUT_S", 0.5, raising=False)
    monkeypatch.setattr(pgbouncer, "_ATTEMPT_PAUSE_S", 0.0)
    async with Silent(token=None) as console:
        conninfo = f"host=127.0.0.1 port={console.port} dbname=pgbouncer user=pgbouncer"
        with pytest.raises(pgbouncer.PgbouncerError, match="did not answer"):
            await asyncio.wait_for(pgbouncer._reload(conninfo), 20)
        assert "RELOAD" in console.queries
