"""ComputeNode: the lifecycle of one compute and its configurator, sequencing only.

``run()`` is Neon's ``ComputeNode::run``: wait for a spec (``empty``), start the compute
(``init``: PGDATA, postgres, the catalog apply as one step), then supervise until the
postmaster exits or a termination is requested, and return the process exit code
(postgres's; 1 if it never started or was killed by a signal).

The configurator is one task, started once the compute runs. It is level-triggered: it
waits with ``state.wait_for`` for "a desired generation newer than the applied one" (or
termination), a predicate read under the lock *before* sleeping, so a ``/configure`` that
lands while it is busy or between its observation and its wait is never lost (Neon's
PR #9162). It also wakes every ``params.resync_interval`` seconds to re-plan the applied
spec and correct drift. It is the only code that writes the catalog after start.

Inputs (``configure``, ``terminate``, signals) only change desired state and wait; the
process work lives in ``launcher``/``postgres``, the SQL in the catalog package (through
``applier``). Every spec passes ``admission`` before it is stored: the start sequence and
the configurator consume ``admission.Admitted`` objects only, so an input error never
reaches them after a file was written or postgres reloaded. Failpoints:
``before-start-postgres``, ``before-apply``, ``after-apply``, ``configurator-observed``
(after the configurator read the state and released the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from compute_ctl.compute import (
    admission,
    applier,
    audit,
    autoscaling,
    confguard,
    errors,
    failpoints,
    leftovers,
    metrics,
    monitor,
    params,
    pgtools,
    postgres,
    sidecars,
    startconf,
    tls,
)
from compute_ctl.compute import installed_extensions as extensions_mod
from compute_ctl.compute import launcher as launcher_mod
from compute_ctl.compute import promote as promote_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.catalog import db as catalog_db
from compute_ctl.compute.catalog import settings as catalog_settings
from compute_ctl.compute.lfc import controller as lfc_mod
from compute_ctl.compute.remote_ext import server as remote_ext

if TYPE_CHECKING:
    from compute_ctl.compute import vm_monitor
    from compute_ctl.compute.storage import leases

__all__ = ["ComputeNode"]

logger = logging.getLogger(__name__)

S = state_mod.ComputeStatus
T = TypeVar("T")
_TERMINABLE = frozenset({S.EMPTY, S.RUNNING, S.FAILED, S.CONFIGURATION_PENDING, S.CONFIGURATION})
_TERMINATE_TARGET = {
    "fast": S.TERMINATION_PENDING_FAST,
    "immediate": S.TERMINATION_PENDING_IMMEDIATE,
}


def _needs_reconfigure(s: state_mod.ComputeState) -> bool:
    return s.desired_generation > s.applied_generation and s.status in (
        S.RUNNING,
        S.CONFIGURATION_PENDING,
    )


def _configurator_wakes(s: state_mod.ComputeState) -> bool:
    return s.status.terminating or s.status is S.FAILED or _retry_due(s)


def _configure_settled(s: state_mod.ComputeState, generation: int) -> bool:
    """A ``/configure`` of ``generation`` has its answer: applied, failed or refused."""
    return (
        s.applied_generation >= generation
        or s.failed_generation >= generation
        or s.rejected_generation >= generation
        or s.status is S.FAILED
        or s.status.terminating
    )


def _retry_due(s: state_mod.ComputeState) -> bool:
    """Reconfigure now: no failed attempt is waiting out its backoff, or a newer spec came."""
    return _needs_reconfigure(s) and (
        s.pending_error is None or s.desired_generation > s.failed_generation
    )


_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0
_BACKSTOP_S = 5.0
_RESTORE_RELOAD_S = 5.0


def _retry_delay(failures: int) -> float:
    """Capped exponential backoff between attempts at a spec that failed."""
    return min(_RETRY_CAP_S, _RETRY_FIRST_S * 2.0 ** max(failures - 1, 0))


class _Phase:
    """Where an attempt is, for the error that names it, and how long each phase took."""

    def __init__(self, now: str) -> None:
        self.now = now
        self.seconds: dict[str, float] = {}
        self._step = now
        self._since = time.monotonic()

    def enter(self, phase: str, *, step: str | None = None) -> None:
        """``phase`` names errors; ``step`` (default: the phase) is what is timed."""
        now = time.monotonic()
        self.seconds[self._step] = self.seconds.get(self._step, 0.0) + now - self._since
        self.now, self._step, self._since = phase, step or phase, now


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, whatever it raises. Unlike awaiting it
    under ``suppress(CancelledError)``, a cancellation of the caller itself still
    propagates (the node's own ``run`` must stay cancellable while it waits here)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (failure := task.exception()) is not None:
        logger.debug("%s ended with %s while cancelled", task.get_name(), type(failure).__name__)


def _applies_catalog(admitted: admission.Admitted) -> bool:
    spec = admitted.spec
    return spec.mode.kind == "Primary" and not spec.skip_pg_catalog_updates


class ComputeNode:
    """One compute: its state, its postmaster and the configurator."""

    def __init__(
        self,
        params: params.Params,
        *,
        config: spec_mod.ComputeConfig | admission.AdmittedConfig | None = None,
        failpoints: failpoints.Failpoints | None = None,
        catalog: applier.CatalogApplier | None = None,
        # Test seam: the process layer (default: PGDATA and postgres on this machine).
        launcher: launcher_mod.Launcher | None = None,
        tools: pgtools.PgTools | None = None,
        # A prewarm the CLI started (``pgdata.prewarm``), for the default launcher to adopt.
        prewarm: asyncio.Task[bool] | None = None,
    ) -> None:
        self.params = params
        self.state = state_mod.ComputeState()
        self.failpoints = failpoints or _failpoints(params)
        self.tools = tools or pgtools.PgTools(
            postgres=pgtools.find_pgbin(params.pgbin),
            user=pgtools.OsUser.resolve(params.os_user),
        )
        self.catalog: applier.CatalogApplier = catalog or applier.ModuleApplier()
        self.launcher: launcher_mod.Launcher = launcher or launcher_mod.LocalLauncher(
            params, tools=self.tools, timings=self.state.timings, prewarm=prewarm
        )
        self.postmaster: launcher_mod.PostgresHandle | None = None
        self.rules = admission.Rules.for_params(params)
        # Admitted in run() (a bad config fails the run, not the constructor).
        self._initial_config = config
        # The admitted forms of ``state.desired`` and ``state.applied``, set with them.
        self._desired: admission.Admitted | None = None
        self._applied: admission.Admitted | None = None
        if config is not None:
            self.state.config = config.compute_ctl_config
            if config.compute_ctl_config.tls is not None:
                self.rules = dataclasses.replace(self.rules, tls=True)
        # pgbouncer, local_proxy and the TLS cert watch (docs/pgbouncer-tls.md).
        self._sidecars = sidecars.Sidecars(params)
        self._stopped_by_signal = False  # Neon: --dev spares the sidecars then only
        self._tls = tls.ComputeTls(
            self.state.config.tls,
            pgdata=params.pgdata,
            user=self.tools.user,
            interval=params.tls_poll_interval,
            on_change=self._reconfigure_same_spec,
        )
        self._spec_received = time.monotonic()
        self._finished = False
        self.metrics = metrics.Metrics(build_tag=params.build_tag, state=self.state)
        self.extension_server = remote_ext.ExtensionServer(
            base_url=params.remote_ext_base_url,
            build_tag=params.build_tag,
            tools=self.tools,
            metrics=self.metrics,
        )
        self._vm_monitor: vm_monitor.VmMonitor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._promotion = promote_mod.Promotion(spawn=self._spawn_task)
        self.lease: leases.LeaseKeeper | None = None  # a Static compute's LSN lease task
        self._conf = confguard.ConfGuard(metrics=self.metrics)
        # The reconfigurations' maintenance session, kept while postgres runs.
        self._maintenance = catalog_db.kept(self.connstr())
        # Seconds between installed-extensions reports (the spec changes it).
        self._extensions_interval = params.installed_extensions_collection_interval
        self.lfc = lfc_mod.Lfc(
            spec=lambda: self.state.applied or self.state.desired,
            connstr=self.connstr,
            metrics=self.metrics,
        )

    # --- inputs ----------------------------------------------------------------

    def connstr(self, dbname: str = "postgres") -> str:
        """The ``-C`` superuser's conninfo to the local postgres, for ``dbname``."""
        return self.params.superuser_conninfo(dbname)

    def admit(
        self, config: spec_mod.ComputeConfig | admission.AdmittedConfig
    ) -> admission.AdmittedConfig:
        """Admission with this compute's rules; an admitted config is returned as is."""
        if isinstance(config, admission.AdmittedConfig):
            return config
        return admission.admit_config(config, rules=self.rules)

    async def configure(self, config: spec_mod.ComputeConfig | admission.AdmittedConfig) -> None:
        """Neon's ``/configure``: admit and store the spec, then wait until it is applied or
        failed. A refused spec (``AdmissionError``) changes nothing."""
        admitted = self.admit(config).spec
        if admitted is None:
            raise errors.AdmissionError("spec: a spec is required")
        await self._check_setting_values(admitted.spec)
        async with self.state.lock() as s:
            if s.status not in (S.EMPTY, S.RUNNING):
                raise errors.StatusError(f"invalid compute status: {s.status.kebab}")
            generation = self._set_desired(s, admitted)
            s.set_status(S.CONFIGURATION_PENDING)
        await self.state.wait_for(lambda s: _configure_settled(s, generation))
        s = self.state
        if s.rejected_generation == generation:
            raise errors.ConfigError(s.rejection or "the spec was refused")
        if s.applied_generation >= generation:
            return
        if s.failed_generation >= generation and s.pending_error is not None:
            reason = s.pending_error
        else:
            reason = s.error or f"compute is {s.status.kebab}"
        raise errors.ComputeError(f"compute configuration failed: {reason}")

    async def terminate(self, mode: Literal["fast", "immediate"]) -> tuple[bool, str | None]:
        """Neon's ``/terminate``: ``(already_terminated, lsn)`` once postgres has stopped.

        Allowed from empty, running and failed (beyond Neon, so a failed compute can be
        ended early), and during a configuration, which it cancels (beyond Neon: a stuck
        apply must not make a compute unstoppable); a second call joins a pending
        termination, and ``immediate`` escalates a pending fast one.
        """
        target = _TERMINATE_TARGET[mode]
        async with self.state.lock() as s:
            if s.status is S.TERMINATED:
                return True, s.terminate_lsn
            if s.status in _TERMINABLE or (
                s.status is S.TERMINATION_PENDING_FAST and target is not s.status
            ):
                s.set_status(target)
            elif not s.status.terminating:
                raise errors.StatusError(f"invalid compute status: {s.status.kebab}")
            if self._finished:
                s.set_status(S.TERMINATED)
        await self.state.wait_for(lambda s: s.status is S.TERMINATED)
        return False, self.state.terminate_lsn

    def request_stop(self, mode: Literal["fast", "immediate"]) -> None:
        """From a signal handler: terminate from any live status (fast, or escalate)."""
        self._stopped_by_signal = True

        async def stop() -> None:
            async with self.state.lock() as s:
                target = _TERMINATE_TARGET[mode]
                if not s.status.terminating or (
                    s.status is S.TERMINATION_PENDING_FAST and target is not s.status
                ):
                    s.set_status(target)

        task = asyncio.get_running_loop().create_task(stop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def promote(
        self, admitted: admission.Admitted, *, wal_flush_lsn: str
    ) -> promote_mod.Outcome:
        """Neon's ``/promote`` (``compute.promote``): join the running or completed
        promotion, or start one. Not running: ``StatusError``; a precondition: failed."""
        if admitted.spec.mode.kind != "Primary":
            raise errors.ConfigError(
                f'spec.mode: a promoted compute is a primary (got "{admitted.spec.mode.kind}")'
            )
        if not self._promotion.started:
            async with self.state.lock() as s:
                status, applied = s.status, self._applied
            if status is not S.RUNNING or applied is None or self.postmaster is None:
                raise errors.StatusError(f"invalid compute status: {status.kebab}")
            refused = promote_mod.refusal(applied.spec, prewarm=self.lfc.prewarm_state.status)
            if refused is not None:
                return promote_mod.Outcome.failed(refused)
        return await self._promotion.join(lambda: self._promote(admitted, wal_flush_lsn))

    async def _promote(
        self, admitted: admission.Admitted, wal_flush_lsn: str
    ) -> promote_mod.Outcome:
        async def reconfigure() -> None:
            # Through /configure's path: the configurator is the one writer of the catalog.
            await self.state.wait_for(
                lambda s: s.status not in (S.CONFIGURATION_PENDING, S.CONFIGURATION)
            )
            config = admission.AdmittedConfig(spec=admitted, compute_ctl_config=self.state.config)
            await self.configure(config)

        return await promote_mod.promote(
            connstr=self.connstr(),
            admitted=admitted,
            wal_flush_lsn=wal_flush_lsn,
            reconfigure=reconfigure,
        )

    async def plan(self, admitted: admission.Admitted) -> applier.PlanLike:
        """The catalog plan an admitted spec would run now (dry run; changes nothing)."""
        if self.postmaster is None or self.state.status not in (
            S.RUNNING,
            S.CONFIGURATION_PENDING,
            S.CONFIGURATION,
        ):
            raise errors.StatusError(f"invalid compute status: {self.state.status.kebab}")
        await self._check_setting_values(admitted.spec)
        return await self.catalog.plan_spec(connstr=self.connstr(), admitted=admitted)

    def _set_desired(self, s: state_mod.ComputeState, admitted: admission.Admitted) -> int:
        self._desired = admitted
        return s.set_desired(admitted.spec)

    def _set_applied(
        self, s: state_mod.ComputeState, admitted: admission.Admitted, generation: int
    ) -> None:
        self._applied = admitted
        s.set_applied(admitted.spec, generation)

    # --- lifecycle -------------------------------------------------------------

    async def run(self) -> int:
        """The whole lifecycle; returns the process exit code."""
        try:
            config = self._initial_config
            initial = self.admit(config).spec if config is not None else None
            if initial is not None:
                async with self.state.lock() as s:
                    self._set_desired(s, initial)
            else:
                self.launcher.start_prewarm()
            received = await self._wait_for_spec()
            if received is None:
                return 0
            return await self._start_and_supervise(*received)
        finally:
            await self._cleanup()

    async def _wait_for_spec(self) -> tuple[admission.Admitted, int] | None:
        waited = time.monotonic()
        await self.state.wait_for(lambda s: s.desired is not None or s.status.terminating)
        async with self.state.lock() as s:
            if s.status.terminating or s.desired is None:
                s.set_status(S.TERMINATED)
                return None
            s.timings.wait_for_spec_ms = state_mod.monotonic_ms(waited)
            s.start_time = s.now()  # time idle in the pool is not startup time
            self._spec_received = time.monotonic()
            s.set_status(S.INIT)
            assert self._desired is not None
            return self._desired, s.desired_generation

    async def _start_and_supervise(self, admitted: admission.Admitted, generation: int) -> int:
        spec = admitted.spec
        self._start_lease(spec)
        startup = asyncio.create_task(self._start_compute(admitted, generation))
        stop = asyncio.create_task(self.state.wait_for(lambda s: s.status.terminating))
        tasks: list[asyncio.Task[Any]] = [startup, stop]
        try:
            await asyncio.wait({startup, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                await _cancelled(startup)
                return await self._shutdown(spec)
            if (failure := startup.exception()) is not None:
                return await self._failed_start(failure)
            assert self.postmaster is not None
            configurator = asyncio.create_task(self._configurator())
            exited = asyncio.create_task(self.postmaster.wait())
            activity = monitor.ActivityMonitor(
                state=self.state, connstr=self.connstr(), metrics=self.metrics
            )
            tasks += [configurator, exited, asyncio.create_task(activity.run())]
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            await _cancelled(configurator)
            await self._maintenance.close()
            if stop.done():
                return await self._shutdown(spec)
            await self._stop_vm_monitor()  # postgres is gone, and with it what it manages
            code: int = exited.result()
            logger.error("postgres exited with code %d; compute_ctl exits", code)
            async with self.state.lock() as s:
                if not s.status.terminating:
                    s.set_status(S.FAILED, error=f"postgres exited with code {code}")
            return postgres.exit_code(code)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_compute(self, admitted: admission.Admitted, generation: int) -> None:
        """Neon's ``start_compute``: PGDATA, postgres, the catalog apply; then running."""
        spec = admitted.spec
        started = time.monotonic()
        self._spawn(self._sidecars.configure(spec, tls=self._tls.for_spec(spec)))
        async with self.extension_server.preloading(spec, timings=self.state.timings):
            await self.launcher.prepare(admitted)  # the preload runs meanwhile (Neon)
        await self._tls.install(spec)
        logger.info("PGDATA ready in %d ms", state_mod.monotonic_ms(started))
        if audit.is_compliance(spec.audit_log_level):  # Neon: before postgres, fatal
            await audit.start_shipping(self.params.audit_shipping, spec, pgdata=self.params.pgdata)
        await self.failpoints.hit("before-start-postgres")
        started, spawned_at = time.monotonic(), time.time()
        self.postmaster = await self.launcher.spawn(admitted)
        await self.postmaster.wait_ready()
        start_postgres_ms = state_mod.monotonic_ms(started)
        if self.params.keep_pgdata:  # a kept PGDATA may hold what a crash left
            await leftovers.remove_orphan_database_dirs(
                self.params.pgdata, connstr=self.connstr(), older_than=spawned_at
            )
        await self.failpoints.hit("before-apply")
        started = time.monotonic()
        if _applies_catalog(admitted):
            await self._configure_as_primary(admitted)
        if spec.mode.kind == "Primary":
            self._spawn(extensions_mod.report(connstr=self.connstr(), metrics=self.metrics))
        config_ms = state_mod.monotonic_ms(started)
        await self.failpoints.hit("after-apply")
        self._vm_monitor = await autoscaling.start_vm_monitor(self.params, spec)
        if spec.autoprewarm:  # vanilla: warm before running (docs/lfc.md)
            await self.lfc.autoprewarm()
        async with self.state.lock() as s:
            s.timings.start_postgres_ms = start_postgres_ms
            s.timings.config_ms = config_ms
            self._set_applied(s, admitted, generation)
            s.pending_restart = []
            s.timings.total_startup_ms = state_mod.monotonic_ms(self._spec_received)
            if s.status is S.INIT:  # else a termination arrived meanwhile: supervise handles it
                s.set_status(S.RUNNING)
        logger.info("compute running: %s", self.state.timings.as_dict())
        self._spawn(self._tls.watch())
        if audit.is_compliance(spec.audit_log_level):
            self._spawn(audit.watch_log_dir(pgdata=self.params.pgdata, metrics=self.metrics))
        self._spawn(self.lfc.run_periodic_offload(self._offload_interval))
        self._spawn(
            extensions_mod.run_periodically(
                connstr=self.connstr(),
                metrics=self.metrics,
                interval=lambda: self._extensions_interval,
            )
        )

    def _offload_interval(self) -> int | None:
        """``offload_lfc_interval_seconds`` of the applied spec (a reconfigure changes it)."""
        return self.state.applied.offload_lfc_interval_seconds if self.state.applied else None

    # --- Neon's Primary start steps (parity: startconf, audit, migrations) ---------

    async def _apply_catalog(
        self, admitted: admission.Admitted, *, concurrency: int, deadline: float | None = None
    ) -> None:
        """Neon's ``apply_spec_sql``: the catalog, then the audit phases."""
        spec = admitted.spec
        await self.catalog.apply_spec(
            connstr=self.connstr(), admitted=admitted, concurrency=concurrency, deadline=deadline
        )
        await audit.apply_sql(connstr=self.connstr(), level=spec.audit_log_level)

    async def _configure_as_primary(self, admitted: admission.Admitted) -> None:
        """The apply under the temporary override, the migrations (in the background, as
        Neon), then the subscribers line and a reload. Failpoint ``temp-override-active``
        holds the start with the override in place."""
        assert self.postmaster is not None
        self._update_extensions_interval(admitted.spec)
        async with startconf.temp_override(
            write=self.launcher.write_temp_override, reload=self.postmaster.reload
        ):
            await self.failpoints.hit("temp-override-active")
            await self._apply_catalog(
                admitted, concurrency=applier.start_concurrency(admitted.spec)
            )
        await self._sidecars.local_proxy_now(admitted.spec, tls=self._tls.for_spec(admitted.spec))
        self._spawn(self._run_migrations())
        self.launcher.append_conf_line(startconf.SUBSCRIBERS_LINE)
        await self.postmaster.reload()

    def _update_extensions_interval(self, spec: spec_mod.ComputeSpec) -> None:
        """Neon: a Primary start's apply and every reconfigure take it from the spec."""
        self._extensions_interval = extensions_mod.interval_from_spec(
            spec, default=self.params.installed_extensions_collection_interval
        )

    async def _run_migrations(self) -> None:
        from compute_ctl.compute.migrations import runner

        async with self.state.lock() as s:
            s.set_migrations(state_mod.MigrationsProgress(state="running"))
        try:
            outcome = await runner.run(
                connstr=self.connstr(),
                privileged_role=self.params.privileged_role_name,
                metrics=self.metrics,
                failpoints=self.failpoints,
            )
            progress = state_mod.MigrationsProgress(
                state="failed" if outcome.failed_id is not None else "done",
                applied=outcome.applied,
                latest=outcome.latest,
                failed_id=outcome.failed_id,
                error=outcome.error,
            )
        except Exception as e:
            logger.error("Failed to run migrations: %s", e)
            progress = state_mod.MigrationsProgress(state="failed", error=str(e))
        async with self.state.lock() as s:
            s.set_migrations(progress)

    def _start_lease(self, spec: spec_mod.ComputeSpec) -> None:
        """Neon: a Static compute leases its LSN from the pageservers, from before postgres
        starts until the compute ends (``storage.leases``; loaded only when needed)."""
        if spec.mode.kind != "Static":
            return
        from compute_ctl.compute.storage import leases

        if leases.wants_lease(spec) and spec.mode.lsn is not None:
            self.lease = leases.LeaseKeeper(state=self.state, lsn=spec.mode.lsn)
            self._spawn(self.lease.run())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A background task of this compute, cancelled when it ends."""
        self._spawn_task(work)

    def _spawn_task(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _failed_start(self, failure: BaseException) -> int:
        logger.error("compute start failed: %s", failure, exc_info=failure)
        async with self.state.lock() as s:
            if not s.status.terminating:
                s.set_status(S.FAILED, error=str(failure))
        if self.postmaster is not None:
            await self.postmaster.stop(postgres.StopMode.IMMEDIATE)
        # Neon keeps serving /status for a while so the control plane can read the error.
        with contextlib.suppress(TimeoutError):
            await self.state.wait_for(
                lambda s: s.status.terminating, timeout=self.params.failed_exit_delay
            )
        return 1

    async def _shutdown(self, spec: spec_mod.ComputeSpec) -> int:
        """A termination was requested: stop postgres (escalating on request), finish."""
        if self._applied is not None:  # a promoted replica stops as the primary it is now
            spec = self._applied.spec
        code = 0
        replayed: str | None = None
        if not (self._stopped_by_signal and self.params.dev):  # forward_termination_signal
            self._sidecars.terminate()
        if self.postmaster is not None:
            try:  # a vanilla replica's final LSN is what it replayed: read it while up
                replayed = await self.launcher.lsn_before_stop(spec)
            except Exception as e:
                logger.error("replayed LSN not available: %s", e)
            immediate = self.state.status is S.TERMINATION_PENDING_IMMEDIATE
            mode = postgres.StopMode.IMMEDIATE if immediate else postgres.StopMode.FAST
            stopping = asyncio.create_task(self.postmaster.stop(mode))
            escalate = asyncio.create_task(
                self.state.wait_for(lambda s: s.status is S.TERMINATION_PENDING_IMMEDIATE)
            )
            await asyncio.wait({stopping, escalate}, return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                await self.postmaster.stop(postgres.StopMode.IMMEDIATE)
            escalate.cancel()
            code = await stopping
        await self._stop_vm_monitor()
        lsn: str | None = None
        try:
            lsn = await self.launcher.final_lsn(spec, replayed_lsn=replayed)
        except Exception as e:
            logger.error("final LSN not available: %s", e)
        async with self.state.lock() as s:
            s.terminate_lsn = lsn
            s.set_status(S.TERMINATED)
        return postgres.exit_code(code)

    async def _cleanup(self) -> None:
        self._finished = True
        for task in list(self._background):
            task.cancel()
        await self.extension_server.close()
        await self.launcher.discard_prewarm()
        await self.lfc.close()
        await self._maintenance.close()
        await self._stop_vm_monitor()
        if self.postmaster is not None:
            with contextlib.suppress(Exception):
                await self.postmaster.stop(postgres.StopMode.IMMEDIATE, timeout=10.0)
            await self.postmaster.close()
        async with self.state.lock() as s:
            if s.status in (S.TERMINATION_PENDING_FAST, S.TERMINATION_PENDING_IMMEDIATE):
                s.set_status(S.TERMINATED)

    async def _stop_vm_monitor(self) -> None:
        monitor, self._vm_monitor = self._vm_monitor, None
        await autoscaling.stop_vm_monitor(monitor)

    # --- the configurator --------------------------------------------------------

    async def _configurator(self) -> None:
        if self.postmaster is not None:
            await self._conf.warm(connstr=self.connstr(), server=self.postmaster.pid)
        failures = 0  # consecutive failed attempts at the desired spec
        while True:
            async with self.state.lock() as s:
                logger.debug(
                    "configurator observes %s, desired %d, applied %d",
                    s.status.value,
                    s.desired_generation,
                    s.applied_generation,
                )
                retrying = s.pending_error is not None
            # Neon lost a wake-up exactly here: the lock is released before the wait.
            await self.failpoints.hit("configurator-observed")
            wait = _retry_delay(failures) if retrying else self.params.resync_interval
            try:
                await self.state.wait_for(_configurator_wakes, timeout=wait)
            except TimeoutError:
                if not retrying:
                    await self._resync()
                    continue
            async with self.state.lock() as s:
                if s.status.terminating or s.status is S.FAILED:
                    return
                if not _needs_reconfigure(s) or self._desired is None:
                    continue
                admitted, generation = self._desired, s.desired_generation
                s.set_status(S.CONFIGURATION_PENDING)
                s.set_status(S.CONFIGURATION)
            try:
                with self.metrics.reconcile():
                    pending = await self._attempt(admitted)
            except errors.PostgresExited:
                return  # the supervisor sees the exit and fails the compute
            except errors.ConfigError as e:
                logger.error("spec refused by postgres, keeping the applied one: %s", e)
                self._write_applied_conf()
                async with self.state.lock() as s:
                    if s.desired_generation == generation:
                        self._desired = self._applied
                    s.reject_desired(generation, str(e))
                    if s.status is S.CONFIGURATION:
                        s.set_status(S.RUNNING)
                await self._reload_applied_conf()
                continue
            except Exception as e:
                failures += 1
                logger.error(
                    "reconfiguration failed (attempt %d, retry in %.1f s): %s",
                    failures,
                    _retry_delay(failures),
                    e,
                    exc_info=e,
                )
                self._write_applied_conf()
                async with self.state.lock() as s:
                    s.fail_attempt(generation, str(e))
                    if s.status is S.CONFIGURATION:
                        s.set_status(S.RUNNING)
                await self._reload_applied_conf()
                continue
            failures = 0
            async with self.state.lock() as s:
                self._set_applied(s, admitted, generation)
                s.pending_restart = pending
                if s.status is S.CONFIGURATION:
                    s.set_status(S.RUNNING)

    async def _attempt(self, admitted: admission.Admitted) -> list[str]:
        """One bounded attempt at ``admitted``; errors name the phase that failed."""
        phases = _Phase("postgresql.conf")
        deadline = time.monotonic() + self.params.apply_timeout
        try:
            # A backstop past the catalog's own deadline, so its error (naming the object
            # that waited) normally comes first.
            async with asyncio.timeout(self.params.apply_timeout + _BACKSTOP_S):
                return await self._reconfigure(admitted, deadline=deadline, phases=phases)
        except TimeoutError:
            raise errors.ComputeError(
                f"{phases.now}: postgres did not answer within {self.params.apply_timeout:g} s"
            ) from None
        except (errors.ApplyError, errors.ConfigError, errors.PostgresExited):
            raise
        except Exception as e:
            raise errors.ComputeError(f"{phases.now}: {e}") from e
        finally:
            phases.enter("")
            for phase, seconds in phases.seconds.items():
                self.metrics.observe_reconfigure_phase(phase, seconds)

    async def _reconfigure(
        self, admitted: admission.Admitted, *, deadline: float, phases: _Phase
    ) -> list[str]:
        """Neon's ``reconfigure``: rewrite postgresql.conf and reload before any SQL.

        Every read (the conf report, the reload check, the catalog, ``pg_settings``) goes
        through one session (``db.shared``), kept open from one reconfiguration to the
        next (``self._maintenance``; closed when postgres stops). The catalog is observed
        and planned on every attempt, so drift is restored by any reconfiguration; the
        temporary override, the executor and their two reloads run only when the plan has
        work (or audit SQL is due): a settings-only change skips them.
        """
        assert self.postmaster is not None
        async with catalog_db.shared(self.connstr(), session=self._maintenance):
            return await self._reconfigure_shared(admitted, deadline=deadline, phases=phases)

    async def _reconfigure_shared(
        self, admitted: admission.Admitted, *, deadline: float, phases: _Phase
    ) -> list[str]:
        assert self.postmaster is not None
        self._update_extensions_interval(admitted.spec)
        self._spawn(self._sidecars.configure(admitted.spec, tls=self._tls.for_spec(admitted.spec)))
        phases.now = "tls"
        await self._tls.install(admitted.spec)
        phases.now = "postgresql.conf"
        self.launcher.write_conf(admitted)
        phases.enter("postgresql.conf", step="conf check")
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
            report = await self._inspect_conf(admitted.spec)
        if report.refused:
            raise errors.ConfigError("; ".join(report.refused))
        await self._conf.repair(report, connstr=self.connstr())
        phases.enter("reload")
        await self.postmaster.reload(timeout=max(deadline - time.monotonic(), 0.1))
        await self.failpoints.hit("before-apply")
        phases.enter("catalog", step="catalog observe and plan")
        if _applies_catalog(admitted) and (
            audit.statements(admitted.spec.audit_log_level)
            or await self.catalog.plan_spec(connstr=self.connstr(), admitted=admitted)
        ):
            phases.enter("catalog", step="catalog apply")
            with catalog_db.unshared():
                async with startconf.temp_override(
                    write=self.launcher.write_temp_override, reload=self.postmaster.reload
                ):
                    await self._apply_catalog(
                        admitted,
                        concurrency=admitted.spec.reconfigure_concurrency,
                        deadline=deadline,
                    )
                await self.postmaster.reload(timeout=max(deadline - time.monotonic(), 0.1))
        await self.failpoints.hit("after-apply")
        phases.enter("catalog", step="pending_restart")
        pending = await self.catalog.pending_restart(connstr=self.connstr())
        if pending:
            logger.warning("settings waiting for a restart: %s", ", ".join(pending))
        return pending

    def _write_applied_conf(self) -> None:
        """After a failed attempt: the conf on disk is the applied spec's again."""
        if self._applied is None:
            return
        try:
            self.launcher.write_conf(self._applied)
        except Exception as e:  # a full disk, say: the next attempt rewrites it anyway
            logger.error("cannot restore the applied spec's postgresql.conf: %s", e)

    async def _reload_applied_conf(self) -> None:
        """...and in effect, once postgres reloads (the SIGHUP is sent first, so a postgres
        that cannot answer now loads it when it resumes)."""
        if self.postmaster is None:
            return
        try:
            await self.postmaster.reload(timeout=_RESTORE_RELOAD_S)
        except Exception as e:
            logger.warning("the applied spec's postgresql.conf is back, reload pending: %s", e)

    # --- TLS rotation (tls.py) ----------------------------------------------------

    async def _reconfigure_same_spec(self) -> None:
        """The cert changed: reconfigure with the desired spec once the configurator is
        not mid-attempt (one that is pending copies the new files anyway)."""
        while True:
            await self.state.wait_for(lambda s: s.status is not S.CONFIGURATION)
            async with self.state.lock() as s:
                if s.status is S.CONFIGURATION:
                    continue
                if s.status is S.RUNNING and self._desired is not None:
                    self._set_desired(s, self._desired)
                    s.set_status(S.CONFIGURATION_PENDING)
                return

    # --- settings as postgres sees them (beyond Neon) -----------------------------

    async def _check_setting_values(self, spec: spec_mod.ComputeSpec) -> None:
        """On a running compute: a value PostgreSQL would refuse is a ``ConfigError``."""
        if self.postmaster is None or self.state.status is not S.RUNNING:
            return
        await self._conf.check_values(spec, connstr=self.connstr(), server=self.postmaster.pid)

    async def _inspect_conf(self, spec: spec_mod.ComputeSpec) -> catalog_settings.ConfReport:
        assert self.postmaster is not None
        return await self._conf.inspect(spec, connstr=self.connstr(), server=self.postmaster.pid)

    async def _resync_settings(self, spec: spec_mod.ComputeSpec) -> None:
        assert self.postmaster is not None
        report = await self._inspect_conf(spec)
        if report.overrides:
            await self._conf.repair(report, connstr=self.connstr())
            await self.postmaster.reload(timeout=self.params.apply_timeout)

    async def _resync(self) -> None:
        """Timer wake-up: re-plan the applied spec and correct drift (beyond Neon)."""
        async with self.state.lock() as s:
            admitted = self._applied if s.status is S.RUNNING else None
        if admitted is None or self.postmaster is None:
            return
        try:
            await self._resync_settings(admitted.spec)
        except Exception as e:
            logger.warning("settings drift check failed: %s", e)
        if not _applies_catalog(admitted):
            return
        try:
            with self.metrics.reconcile() as record:
                plan = await self.catalog.plan_spec(connstr=self.connstr(), admitted=admitted)
                if not plan:
                    record.outcome = "noop"
                    return
                logger.warning("catalog drift: %d statement(s) to restore it", plan.statement_count)
                await self.catalog.apply_spec(
                    connstr=self.connstr(),
                    admitted=admitted,
                    concurrency=admitted.spec.reconfigure_concurrency,
                    deadline=time.monotonic() + self.params.apply_timeout,
                )
        except Exception as e:
            logger.warning("drift check failed: %s", e)


def _failpoints(params: params.Params) -> failpoints.Failpoints:
    return failpoints.Failpoints.from_env(os.environ.get("FAILPOINTS"), enabled=params.failpoints)
