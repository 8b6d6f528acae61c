"""From an admitted spec to a spawned postmaster: PGDATA preparation, config files, spawning.

``Launcher`` is the node's seam to the process layer; ``LocalLauncher`` is the real one.
It takes ``admission.Admitted`` specs only: their ``postgresql.conf`` is already rendered
and their storage target checked, so nothing here can meet an input error after PGDATA
was touched.


- local mode (no pageserver, no safekeepers): Neon's fresh start (wipe, ``initdb`` with the
  ``-C`` user as superuser) or, with ``--keep-pgdata``, an existing valid PGDATA kept;
- Neon storage or a vanilla primary to follow (``spec.primary_connstring``): the storage
  package's ``prepare`` (sync safekeepers, basebackup, signal files), imported only by
  the starts that need it (a local-mode start never loads it);
- either way ``postgresql.conf`` (rendered by admission) and ``pg_hba.conf`` are (re)written, then
  ``postgres.Postmaster.spawn``; with ``AUTOSCALING`` the child joins the cgroup.

The node owns ordering and state; this module never touches ``ComputeState`` except the
timings object it is handed for the storage steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Protocol

from compute_ctl.compute import (
    admission,
    errors,
    leftovers,
    params,
    pgconf,
    pgdata,
    pgtools,
    postgres,
    safefs,
    startconf,
    state,
)
from compute_ctl.compute import spec as spec_mod

__all__ = ["Launcher", "LocalLauncher", "PostgresHandle"]

logger = logging.getLogger(__name__)

_NEON_HBA_LINE = "host all all all md5"
_HBA_MAX = 1 << 20


class PostgresHandle(Protocol):
    """What the node needs of a running postmaster (``postgres.Postmaster``)."""

    @property
    def pid(self) -> int: ...

    async def wait_ready(self, *, timeout: float = ...) -> None: ...

    async def wait(self) -> int: ...

    async def stop(self, mode: postgres.StopMode, *, timeout: float = ...) -> int: ...

    async def reload(self, *, timeout: float = ...) -> None: ...

    async def close(self) -> None: ...


class Launcher(Protocol):
    async def prepare(self, admitted: admission.Admitted) -> None:
        """Make PGDATA ready to start ``admitted`` (its config files included)."""

    async def spawn(self, admitted: admission.Admitted) -> PostgresHandle:
        """Spawn the postmaster; the caller waits for it to be ready."""

    def write_conf(self, admitted: admission.Admitted) -> None:
        """Rewrite ``postgresql.conf`` for ``admitted`` (before a reload)."""

    def write_temp_override(self, text: str) -> None:
        """Write the file ``postgresql.conf`` includes last ("" truncates it)."""

    def append_conf_line(self, line: str) -> None:
        """Append ``line`` to ``postgresql.conf`` unless it is there (Neon's line-in-file)."""

    async def lsn_before_stop(self, spec: spec_mod.ComputeSpec) -> str | None:
        """Before postgres stops: what only a running postgres can tell (a replica's
        replayed LSN); handed back to ``final_lsn``."""

    async def final_lsn(
        self, spec: spec_mod.ComputeSpec, *, replayed_lsn: str | None = None
    ) -> str | None:
        """After postgres stopped: the LSN the storage has (None in local mode)."""

    def start_prewarm(self) -> None:
        """While waiting for a spec: start preparing what any start will need."""

    async def discard_prewarm(self) -> None:
        """Stop and remove an unused prewarm."""


class LocalLauncher:
    """PGDATA and postmaster on this machine, as ``Params`` describe them."""

    def __init__(
        self,
        params: params.Params,
        *,
        tools: pgtools.PgTools,
        timings: state.Timings,
        prewarm: asyncio.Task[bool] | None = None,
    ) -> None:
        self.params = params
        self.tools = tools
        self.timings = timings
        self.pgdata = params.pgdata
        self._local = params.local
        self._warmup = pgdata.warmup_dir(self.pgdata)
        # A prewarm already running (the CLI starts one while it validates the config).
        self._prewarm = prewarm

    # --- config files ------------------------------------------------------------

    def write_conf(self, admitted: admission.Admitted) -> None:
        pgdata.write_config_files(
            pgdata=self.pgdata, user=self.tools.user, postgresql_conf=admitted.conf
        )

    def _hba(self) -> str:
        return pgconf.render_hba(
            superuser=self._local.user, loopback=self.params.trust_superuser_on_loopback
        )

    def write_temp_override(self, text: str) -> None:
        startconf.write_override(pgdata=self.pgdata, text=text, user=self.tools.user)

    def append_conf_line(self, line: str) -> None:
        startconf.line_in_file(self.pgdata / "postgresql.conf", line)

    # --- preparing PGDATA --------------------------------------------------------

    async def prepare(self, admitted: admission.Admitted) -> None:
        leftovers.remove_temp_files(self.pgdata)
        pgdata.ensure_socket_dir(self.pgdata, self.tools.user)
        if admitted.storage.uses_storage:
            await self.discard_prewarm()
            await self._prepare_from_storage(admitted)
            return
        found = pgdata.inspect(self.pgdata)
        if self.params.keep_pgdata and found.kind is pgdata.Existing.VALID:
            await self.discard_prewarm()
            major = await pgdata.binary_major(self.tools)
            if found.major != major:
                raise errors.ConfigError(
                    f"PGDATA {self.pgdata} is PostgreSQL {found.major} but the binary is "
                    f"{major}; refusing to wipe it (--keep-pgdata)"
                )
            pgdata.clear_stale_locks(self.pgdata, socket_dir=pgdata.socket_dir_for(self.pgdata))
            logger.info("keeping PGDATA %s (PostgreSQL %s)", self.pgdata, major)
        elif await self._take_prewarmed():
            logger.info("PGDATA %s from the prewarmed initdb", self.pgdata)
        else:
            if found.kind is pgdata.Existing.DAMAGED:
                logger.warning("PGDATA %s is incomplete (no pg_control); re-creating", self.pgdata)
            await pgdata.init_fresh(
                pgdata=self.pgdata,
                tools=self.tools,
                superuser=self._local.user,
                sync=self.params.keep_pgdata,
            )
        pgdata.write_config_files(
            pgdata=self.pgdata,
            user=self.tools.user,
            postgresql_conf=admitted.conf,
            hba=self._hba(),
        )

    # --- the pooled compute's prewarm -------------------------------------------

    def start_prewarm(self) -> None:
        """While the compute waits for a spec: ``pgdata.prewarm`` a spare PGDATA that a
        local-mode start renames into place instead of running initdb on its critical path
        (the cold start of a pooled compute)."""
        if self._prewarm is None:
            self._prewarm = asyncio.get_running_loop().create_task(self._run_prewarm())

    async def _run_prewarm(self) -> bool:
        if self.params.keep_pgdata and pgdata.inspect(self.pgdata).kind is pgdata.Existing.VALID:
            return False
        return await pgdata.prewarm(
            pgdata=self.pgdata,
            tools=self.tools,
            superuser=self._local.user,
            sync=self.params.keep_pgdata,
        )

    async def _take_prewarmed(self) -> bool:
        task, self._prewarm = self._prewarm, None
        if task is None or not await task:
            return False
        try:
            pgdata.move_into_place(self._warmup, self.pgdata)
        except OSError as e:
            logger.warning("cannot use the prewarmed PGDATA, running initdb: %s", e)
            shutil.rmtree(self._warmup, ignore_errors=True)
            return False
        return True

    async def discard_prewarm(self) -> None:
        task, self._prewarm = self._prewarm, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._warmup.exists():
            shutil.rmtree(self._warmup, ignore_errors=True)

    async def _prepare_from_storage(self, admitted: admission.Admitted) -> None:
        from compute_ctl.compute import storage

        spec = admitted.spec
        pgdata.check_wipe_safe(self.pgdata)
        pgdata.init_empty(self.pgdata, self.tools.user)
        # Neon writes postgresql.conf first: the basebackup does not carry one.
        self.write_conf(admitted)
        await storage.prepare(spec=spec, pgdata=self.pgdata, tools=self.tools, timings=self.timings)
        if spec.primary_connstring is not None:
            # A clone carries the primary's pg_hba.conf, which need not trust our -C user.
            pgdata.write_config_files(
                pgdata=self.pgdata,
                user=self.tools.user,
                postgresql_conf=admitted.conf,
                hba=self._hba(),
            )
            return
        # The basebackup's pg_hba.conf: read without following a link (PGDATA is the OS
        # user's), and never larger than a real one.
        raw = safefs.read_bytes(self.pgdata, "pg_hba.conf", limit=_HBA_MAX)
        text = raw.decode(errors="replace") if raw is not None else ""
        if _NEON_HBA_LINE not in text.splitlines():
            pgdata.write_config_files(
                pgdata=self.pgdata,
                user=self.tools.user,
                postgresql_conf=admitted.conf,
                hba=text
                + ("" if text.endswith("\n") or not text else "\n")
                + _NEON_HBA_LINE
                + "\n",
            )

    # --- the process -------------------------------------------------------------

    async def spawn(self, admitted: admission.Admitted) -> postgres.Postmaster:
        env: dict[str, str] = {}
        if admitted.spec.storage_auth_token:
            env["NEON_AUTH_TOKEN"] = admitted.spec.storage_auth_token
        cgroup_dir: Path | None = None
        if self.params.autoscaling:
            cgroup_dir = self.params.cgroup_root / self.params.cgroup
        return await postgres.Postmaster.spawn(
            tools=self.tools,
            pgdata=self.pgdata,
            connstr=self.params.superuser_conninfo(),
            env=env,
            cgroup_dir=cgroup_dir,
        )

    async def lsn_before_stop(self, spec: spec_mod.ComputeSpec) -> str | None:
        if spec.primary_connstring is None:
            return None
        from compute_ctl.compute import storage

        return await storage.lsn_before_stop(spec=spec, connstr=self.params.superuser_conninfo())

    async def final_lsn(
        self, spec: spec_mod.ComputeSpec, *, replayed_lsn: str | None = None
    ) -> str | None:
        if not spec.has_neon_storage() and spec.primary_connstring is None:
            return None
        from compute_ctl.compute import storage

        return await storage.final_lsn(
            spec=spec,
            pgdata=self.pgdata,
            tools=self.tools,
            timings=self.timings,
            replayed_lsn=replayed_lsn,
        )
