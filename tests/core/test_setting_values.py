"""Managed settings are what PostgreSQL has in effect (issue 11 item 2, issue 12 item 10).

- A value PostgreSQL would refuse (bad enum, out of range, bad unit, unknown name) is a
  400 naming the setting before anything is written: ``postgresql.conf`` byte-identical,
  the compute running on its spec. Neon writes it, reloads, and answers 200 while
  PostgreSQL silently keeps the old value.
- A value that passes those checks but that PostgreSQL still refuses (a check hook) is
  caught through ``pg_file_settings`` before the reload: the previous conf is restored,
  400, and the desired spec is the applied one again.
- ``ALTER SYSTEM`` cannot override a managed setting: the next ``/configure`` and the
  periodic resync reset it.

One compute for the module, real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from compute_ctl.compute import errors, node, state
from compute_ctl.compute.http import translate
from tests import pgserver
from tests.core import helpers

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
S = state.ComputeStatus


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute() -> AsyncIterator[node.ComputeNode]:
    base = pgserver.scratch_dir("core-settings-")
    port = pgserver.free_port()
    n = node.ComputeNode(
        helpers.make_params(pgdata=base / "pgdata", port=port, resync_interval=0.3),
        config=helpers.config(helpers.spec_json(port=port)),
    )
    try:
        async with helpers.run_node(n):
            yield n
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _port(n: node.ComputeNode) -> int:
    return n.params.local.port


async def _refused(n: node.ComputeNode, name: str, value: str, vartype: str) -> str:
    conf = n.params.pgdata / "postgresql.conf"
    before = conf.read_bytes()
    applied, generation = n.state.applied_hash, n.state.applied_generation
    body = helpers.spec_json(port=_port(n), settings=[(name, value, vartype)])
    with pytest.raises(errors.ConfigError) as refused:
        await n.configure(helpers.config(body))
    assert translate.status_and_message(refused.value) == (400, str(refused.value))
    assert name in str(refused.value)
    assert conf.read_bytes() == before
    s = n.state
    assert s.status is S.RUNNING
    assert s.desired_hash == s.applied_hash == applied
    assert s.applied_generation >= generation
    assert s.pending_error is None
    return str(refused.value)


@pytest.mark.parametrize(
    ("name", "value", "vartype", "why"),
    [
        ("log_min_messages", "loud", "enum", "not one of"),
        ("wal_level", "bogus", "enum", "not one of"),
        ("work_mem", "1kB", "integer", "outside the valid range"),
        ("statement_timeout", "-5", "integer", "outside the valid range"),
        ("work_mem", "4mb", "string", "invalid unit"),
        ("statement_timeout", "3 parsecs", "integer", "invalid unit"),
        ("fsync", "maybe", "bool", "not a boolean"),
        ("work_mme", "4MB", "string", "unknown"),
    ],
)
async def test_a_value_postgres_would_refuse_is_a_400(
    compute: node.ComputeNode, name: str, value: str, vartype: str, why: str
) -> None:
    message = await _refused(compute, name, value, vartype)
    assert why in message


async def test_a_value_refused_by_a_check_hook_restores_the_conf(
    compute: node.ComputeNode,
) -> None:
    # Passes type checks (a string), but log_destination's check hook refuses it.
    message = await _refused(compute, "log_destination", "bogus", "string")
    assert "refuses" in message
    assert await helpers.show(compute, "log_destination") == "stderr"
    # A valid spec is still accepted.
    body = helpers.spec_json(port=_port(compute), settings=[("work_mem", "3MB", "string")])
    await compute.configure(helpers.config(body))
    assert await helpers.show(compute, "work_mem") == "3MB"


async def test_alter_system_cannot_override_a_managed_setting(compute: node.ComputeNode) -> None:
    auto = compute.params.pgdata / "postgresql.auto.conf"
    async with await psycopg.AsyncConnection.connect(compute.connstr(), autocommit=True) as conn:
        await conn.execute("alter system set work_mem = '64kB'")
        await conn.execute("select pg_reload_conf()")
    body = helpers.spec_json(port=_port(compute), settings=[("work_mem", "4MB", "string")])
    await compute.configure(helpers.config(body))
    assert await helpers.show(compute, "work_mem") == "4MB"
    assert "work_mem" not in auto.read_text()
    repaired = compute.metrics.setting_overrides_repaired._value.get()
    assert repaired >= 1

    # Without any /configure: the periodic resync finds and resets it.
    async with await psycopg.AsyncConnection.connect(compute.connstr(), autocommit=True) as conn:
        await conn.execute("alter system set work_mem = '64kB'")
        await conn.execute("select pg_reload_conf()")
    shown: list[str] = []

    async def reset() -> bool:
        shown.append(await helpers.show(compute, "work_mem"))
        return shown[-1] == "4MB" and "work_mem" not in auto.read_text()

    for _ in range(200):
        if await reset():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"override not repaired: {shown[-5:]}")
    assert compute.metrics.setting_overrides_repaired._value.get() > repaired
