"""A cheap process layer for the configurator stress test: a ``Launcher`` whose postmaster
is an already running real PostgreSQL, and an applier that stamps the applied spec into it.

``AttachedPostgres`` owns no process: stopping it "detaches" (exit code 0) and ``crash``
makes the node see its postmaster exit. The SQL still goes to the real server, so each
iteration of the stress test costs milliseconds instead of an initdb.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
from psycopg import sql

from compute_ctl.compute import admission, postgres
from compute_ctl.compute import spec as spec_mod
from tests.core import applier

__all__ = ["AttachLauncher", "AttachedPostgres", "StampApplier"]


class AttachedPostgres:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait_ready(self, *, timeout: float = 60.0) -> None:
        await asyncio.sleep(0)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    async def stop(self, mode: postgres.StopMode, *, timeout: float = 60.0) -> int:
        self.crash(0)
        return await self.wait()

    async def reload(self, *, timeout: float = 10.0) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        pass

    def crash(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)


class AttachLauncher:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.handle: AttachedPostgres | None = None
        self.conf = ""
        self.override = ""

    async def prepare(self, admitted: admission.Admitted) -> None:
        self.write_conf(admitted)
        await asyncio.sleep(0)

    async def spawn(self, admitted: admission.Admitted) -> AttachedPostgres:
        self.handle = AttachedPostgres(self.pid)
        return self.handle

    def write_conf(self, admitted: admission.Admitted) -> None:
        self.conf = admitted.conf

    def write_temp_override(self, text: str) -> None:
        self.override = text

    def append_conf_line(self, line: str) -> None:
        if line not in self.conf.split("\n"):
            self.conf += "\n" + line

    async def lsn_before_stop(self, spec: spec_mod.ComputeSpec) -> str | None:
        return None

    async def final_lsn(
        self, spec: spec_mod.ComputeSpec, *, replayed_lsn: str | None = None
    ) -> str | None:
        return None

    def start_prewarm(self) -> None:
        pass

    async def discard_prewarm(self) -> None:
        await asyncio.sleep(0)


class StampApplier:
    """Writes (key, spec hash) into ``core_stress.stamp`` on one shared connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, key: int, rng: random.Random) -> None:
        self.conn = conn
        self.key = key
        self.rng = rng

    async def apply_spec(
        self,
        *,
        connstr: str,
        admitted: admission.Admitted,
        concurrency: int,
        deadline: float | None = None,
    ) -> object:
        await asyncio.sleep(self.rng.random() * 0.002)  # widen the windows a little
        await self.conn.execute(
            "insert into core_stress.stamp values (%s, %s) "
            "on conflict (key) do update set hash = excluded.hash",
            [self.key, admitted.hash],
        )
        return None

    async def stamp(self) -> str | None:
        cur = await self.conn.execute(
            "select hash from core_stress.stamp where key = %s", [self.key]
        )
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def plan_spec(self, *, connstr: str, admitted: admission.Admitted) -> applier.SqlPlan:
        """One statement while the stamp is not this spec's (the configurator applies only
        a plan with work in it), none after."""
        if await self.stamp() == admitted.hash:
            return applier.SqlPlan([])
        return applier.SqlPlan([sql.SQL("-- stamp {}").format(sql.Literal(admitted.hash))])

    async def pending_restart(self, *, connstr: str) -> list[str]:
        return []
