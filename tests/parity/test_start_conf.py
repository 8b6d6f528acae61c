"""The conf steps of a Primary start, in Neon's order around the catalog apply, read from
``pg_file_settings`` at each step (failpoints hold the start): the temporary override
while applying, its truncation after, the ``=false`` subscribers line appended last; then
the background migrations reported in ``/status``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from compute_ctl.compute import failpoints, node, startconf, state
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers

pytestmark = pytest.mark.postgres
S = state.ComputeStatus


async def _rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    # As the superuser: over the socket (n.connstr()), the only place pg_hba.conf trusts it.
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def _file_settings(dsn: str, name: str) -> list[tuple[str, str, bool]]:
    rows = await _rows(
        dsn,
        "SELECT pg_catalog.regexp_replace(sourcefile, '.*/', ''), setting, applied "
        "FROM pg_catalog.pg_file_settings WHERE name = %s ORDER BY seqno",
        [name],
    )
    return [(str(f), str(v), bool(a)) for f, v, a in rows]


async def _setting(dsn: str, name: str) -> str | None:
    rows = await _rows(dsn, "SELECT pg_catalog.current_setting(%s, true)", [name])
    return None if rows[0][0] is None else str(rows[0][0])


async def _wait_setting(dsn: str, name: str, value: str | None) -> None:
    # A reload is asynchronous: new sessions see it once the postmaster has processed it.
    last: list[str | None] = []

    async def check() -> bool:
        last[:] = [await _setting(dsn, name)]
        return last[0] == value

    end = time.monotonic() + 30.0
    while not await check():
        assert time.monotonic() < end, f"{name} is {last[0]!r}, expected {value!r}"
        await asyncio.sleep(0.01)


async def test_primary_start_conf_steps_in_neons_order(scratch: Path) -> None:
    port = pgserver.free_port()
    pgdata = scratch / "pgdata"
    raw = helpers.spec_json(port=port)
    raw["drop_subscriptions_before_start"] = True
    fps = failpoints.Failpoints(enabled=True)
    fps.set("before-apply", "pause")
    fps.set("temp-override-active", "pause")
    fps.set("after-apply", "pause")
    n = node.ComputeNode(
        helpers.make_params(pgdata=pgdata, port=port),
        config=spec_mod.ComputeConfig.model_validate({"spec": raw}),
        failpoints=fps,
    )
    override = pgdata / "compute_ctl_temp_override.conf"
    dsn = n.connstr()
    async with helpers.run_node(n, until=None):
        # 1. Postgres is up, nothing applied: the override file is empty, the spec says
        #    subscribers are disabled (the last line before the include).
        await helpers.wait_until(lambda: "before-apply" in fps.waiting, timeout=60)
        assert override.read_text() == ""
        assert await _file_settings(dsn, "neon.max_cluster_size") == []
        assert await _file_settings(dsn, "neon.disable_logical_replication_subscribers") == [
            ("postgresql.conf", "true", True)
        ]
        fps.set("before-apply", "off")

        # 2. While applying: the override is written and reloaded.
        await helpers.wait_until(lambda: "temp-override-active" in fps.waiting, timeout=30)
        assert override.read_text() == "neon.max_cluster_size=-1"
        assert await _file_settings(dsn, "neon.max_cluster_size") == [
            ("compute_ctl_temp_override.conf", "-1", True)
        ]
        await _wait_setting(dsn, "neon.max_cluster_size", "-1")
        fps.set("temp-override-active", "off")

        # 3. After: the override is truncated (not deleted), reloaded away, and the
        #    subscribers line appended after the include, so it wins.
        await helpers.wait_until(lambda: "after-apply" in fps.waiting, timeout=30)
        assert override.exists()
        assert override.stat().st_size == 0
        assert await _file_settings(dsn, "neon.max_cluster_size") == []
        assert await _file_settings(dsn, "neon.disable_logical_replication_subscribers") == [
            ("postgresql.conf", "true", False),
            ("postgresql.conf", "false", True),
        ]
        conf = (pgdata / "postgresql.conf").read_text()
        assert conf.endswith(
            "include_if_exists = 'compute_ctl_temp_override.conf'\n\n" + startconf.SUBSCRIBERS_LINE
        )
        await _wait_setting(dsn, "neon.disable_logical_replication_subscribers", "false")
        fps.set("after-apply", "off")
        await n.state.wait_for(lambda s: s.status is S.RUNNING, timeout=30)

        # The migrations ran in the background; /status says when they are done.
        await n.state.wait_for(
            lambda s: s.migrations is not None and s.migrations.state != "running", timeout=30
        )
        assert n.state.migrations == state.MigrationsProgress(state="done", applied=12, latest=12)
        assert await _rows(
            dsn, "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'neon_superuser'"
        ) == [(True,)]
        # The migrations' grants are no drift: re-planning the applied spec finds nothing.
        assert n._desired is not None
        assert not await n.plan(n._desired)

        # Reconfigure: the override again around the apply, truncated after; the append is
        # a start-only step (the rewritten file has the spec's =true again, as in Neon).
        fps.set("after-apply", "pause")
        raw["drop_subscriptions_before_start"] = False
        configuring = asyncio.create_task(
            n.configure(spec_mod.ComputeConfig.model_validate({"spec": raw}))
        )
        await helpers.wait_until(lambda: "after-apply" in fps.waiting, timeout=30)
        assert override.stat().st_size == 0
        assert await _file_settings(dsn, "neon.disable_logical_replication_subscribers") == [
            ("postgresql.conf", "false", True)
        ]
        fps.set("after-apply", "off")
        await configuring
        assert n.state.migrations is not None
        assert n.state.migrations.state == "done"


async def test_a_failed_migration_shows_in_status_and_metrics(scratch: Path) -> None:
    port = pgserver.free_port()
    fps = failpoints.Failpoints.from_env("compute-migration=return(5)", enabled=True)
    n = node.ComputeNode(
        helpers.make_params(pgdata=scratch / "pgdata", port=port),
        config=spec_mod.ComputeConfig.model_validate({"spec": helpers.spec_json(port=port)}),
        failpoints=fps,
    )
    dsn = n.connstr()
    async with helpers.run_node(n):
        await n.state.wait_for(
            lambda s: s.migrations is not None and s.migrations.state != "running", timeout=30
        )
        progress = n.state.migrations
        assert progress is not None
        assert (progress.state, progress.applied, progress.failed_id) == ("failed", 4, 5)
        # The compute keeps running (Neon: only logged); the id stays at the last commit.
        assert n.state.status is S.RUNNING
        assert await _rows(dsn, "SELECT id FROM neon_migration.migration_id") == [(4,)]
        value = n.metrics.registry.get_sample_value(
            "compute_ctl_db_migration_failed_total", {"migration_id": "5"}
        )
        assert value == 1.0
