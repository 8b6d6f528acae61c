"""Prometheus metrics of one compute, in a registry of its own (never the global one).

Owns ``Metrics``: the ``CollectorRegistry`` that ``GET /metrics`` renders, and the few
recording calls the rest of compute_ctl makes:

- ``compute_ctl_up{build_tag,status}``: read from ``ComputeState`` at scrape time, so
  exactly one series exists whatever the status history (Neon resets its gauge on
  every change to get the same effect).
- ``compute_ctl_startup_phase_seconds{phase}``: time to running, by phase. Recorded
  automatically by a ``ComputeState`` listener when the status reaches ``running``
  from ``init``: the node's ``Timings`` (non-zero phases) plus ``init_to_running``,
  measured by the listener itself.
- ``compute_ctl_reconcile_duration_seconds`` and ``compute_ctl_reconcile_total{outcome}``:
  recorded by the configurator through ``reconcile()`` (or ``observe_reconcile()``).
- ``compute_ctl_reconfigure_phase_seconds{phase}``: where a reconfiguration's time goes
  (``postgresql.conf``, ``reload``, ``catalog``, ``pending_restart``...), recorded by the
  configurator after each attempt through ``observe_reconfigure_phase()``.
- ``compute_ctl_setting_overrides_repaired_total``: managed settings the configurator
  found overridden by ``ALTER SYSTEM`` and reset.
- ``compute_ctl_remote_ext_requests_total{http_status,filename}``: one per extension
  download, recorded by ``remote_ext.server`` through ``remote_ext_request()``.
- ``compute_pg_current_downtime_ms`` and ``compute_pg_downtime_ms_total``: recorded by
  the activity monitor through ``report_up()`` / ``report_down()`` (Neon's names).
- ``compute_ctl_lfc_{prewarms,prewarm_errors,offloads,offload_errors}_total``: counted
  by ``compute.lfc.controller``.

It must not do I/O, and it must not import the node or the HTTP layer (both import it).

Wiring: the node owns one, ``Metrics(build_tag=params.build_tag, state=node.state)``,
hands it to ``http.server.serving(node, metrics=...)`` and to the activity monitor, and
wraps each configurator pass in ``with metrics.reconcile() as record:`` (setting
``record.outcome = "noop"`` when the plan was empty).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from compute_ctl.compute import state as state_mod

__all__ = ["OUTCOMES", "Metrics", "ReconcileRecord"]

# Neon exports no ``*_created`` series; prometheus-client adds one per counter and
# histogram unless told not to (a process-wide switch; compute_ctl has no other registry).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

OUTCOMES = ("applied", "noop", "failed", "cancelled")
"""Reconcile outcomes: changes made; nothing to do; an error; interrupted."""

# Startup phases that come from ``state.Timings`` (milliseconds) when running is reached.
_TIMING_PHASES = (
    "wait_for_spec",
    "sync_safekeepers",
    "basebackup",
    "load_ext",  # the remote-extension preload (remote_ext.server)
    "start_postgres",
    "config",
    "total_startup",
)
_STARTUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class _UpCollector(Collector):
    """``compute_ctl_up``: one series, labelled with the status at scrape time."""

    def __init__(self, *, build_tag: str, state: state_mod.ComputeState) -> None:
        self._build_tag = build_tag
        self._state = state

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "compute_ctl_up",
            "Whether compute_ctl is running",
            labels=["build_tag", "status"],
        )
        family.add_metric([self._build_tag, self._state.status.kebab], 1)
        yield family


@dataclasses.dataclass
class ReconcileRecord:
    """Handed out by ``Metrics.reconcile()``; set ``outcome = "noop"`` when nothing changed."""

    outcome: str = "applied"


class Metrics:
    """The compute's metrics. One instance per ``ComputeState``."""

    def __init__(self, *, build_tag: str, state: state_mod.ComputeState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_UpCollector(build_tag=build_tag, state=state))
        self.startup_phase_seconds = Histogram(
            "compute_ctl_startup_phase_seconds",
            "Time to running by startup phase, in seconds",
            ["phase"],
            buckets=_STARTUP_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "compute_ctl_reconcile_duration_seconds",
            "Duration of one configurator reconcile pass, in seconds",
            buckets=_RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_total = Counter(
            "compute_ctl_reconcile",
            "Configurator reconcile passes by outcome (applied, noop, failed, cancelled)",
            ["outcome"],
            registry=self.registry,
        )
        self.reconfigure_phase_seconds = Histogram(
            "compute_ctl_reconfigure_phase_seconds",
            "Time of one reconfiguration by phase, in seconds",
            ["phase"],
            buckets=_RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.setting_overrides_repaired = Counter(
            "compute_ctl_setting_overrides_repaired",
            "Managed settings found overridden by ALTER SYSTEM and reset",
            registry=self.registry,
        )
        self.pg_current_downtime_ms = Gauge(
            "compute_pg_current_downtime_ms",
            "Non-cumulative duration of Postgres downtime in ms; resets after successful check",
            registry=self.registry,
        )
        self.pg_downtime_ms = Counter(
            "compute_pg_downtime_ms",
            "Cumulative duration of Postgres downtime in ms",
            registry=self.registry,
        )
        self._neon_families()
        self._init_started: float | None = None
        state.listeners.append(self._on_transition)
        self._state = state

    def _neon_families(self) -> None:
        """Neon's families (``compute_tools/src/metrics.rs``), same names, types, labels."""
        self.installed_extensions = Gauge(
            "compute_installed_extensions",
            "Number of databases where the version of extension is installed",
            ["extension_name", "version", "owned_by_superuser"],
            registry=self.registry,
        )
        self.cplane_requests = Counter(
            "compute_ctl_cplane_requests",
            "Total number of control plane requests made by compute_ctl by status",
            ["rpc", "http_status"],
            registry=self.registry,
        )
        self.remote_ext_requests = Counter(
            "compute_ctl_remote_ext_requests",
            "Total number of requests made by compute_ctl to download extensions from S3 proxy "
            "by status",
            ["http_status", "filename"],
            registry=self.registry,
        )
        self.db_migration_failed = Counter(
            "compute_ctl_db_migration_failed",
            "Total number of failed database migrations",
            ["migration_id"],
            registry=self.registry,
        )
        self.audit_log_dir_size = Gauge(
            "compute_audit_log_dir_size",
            "Size of audit log directory in bytes",
            registry=self.registry,
        )
        # Cache prewarm and offload (``compute.lfc``); periodic offloads count too.
        self.lfc_prewarms = Counter(
            "compute_ctl_lfc_prewarms",
            "Total number of LFC prewarms requested",
            registry=self.registry,
        )
        self.lfc_prewarm_errors = Counter(
            "compute_ctl_lfc_prewarm_errors",
            "Total number of LFC prewarm errors",
            registry=self.registry,
        )
        self.lfc_offloads = Counter(
            "compute_ctl_lfc_offloads",
            "Total number of LFC offloads requested",
            registry=self.registry,
        )
        self.lfc_offload_errors = Counter(
            "compute_ctl_lfc_offload_errors",
            "Total number of LFC offload errors",
            registry=self.registry,
        )

    # --- Neon's recording calls -----------------------------------------------

    def migration_failed(self, migration_id: int) -> None:
        self.db_migration_failed.labels(migration_id=str(migration_id)).inc()

    def cplane_request(self, *, rpc: str, http_status: str) -> None:
        """``http_status`` as Neon prints it (``"200 OK"``), or ``unknown``."""
        self.cplane_requests.labels(rpc=rpc, http_status=http_status).inc()

    def remote_ext_request(self, *, http_status: str, filename: str) -> None:
        """One extension download; ``http_status`` as ``cplane_request``'s."""
        self.remote_ext_requests.labels(http_status=http_status, filename=filename).inc()

    def set_installed_extensions(self, counts: Iterable[tuple[tuple[str, str, str], int]]) -> None:
        """``((extname, version, owned_by_superuser), n_databases)``; never reset (Neon)."""
        for (name, version, owned), n in counts:
            self.installed_extensions.labels(
                extension_name=name, version=version, owned_by_superuser=owned
            ).set(n)

    # --- startup (automatic, from state transitions) ------------------------

    def _on_transition(self, old: state_mod.ComputeStatus, new: state_mod.ComputeStatus) -> None:
        # Runs under the state lock inside set_status: keep it cheap and never raise.
        if new == state_mod.ComputeStatus.INIT:
            self._init_started = time.monotonic()
        elif new == state_mod.ComputeStatus.RUNNING and old == state_mod.ComputeStatus.INIT:
            if self._init_started is not None:
                self.observe_startup_phase("init_to_running", time.monotonic() - self._init_started)
                self._init_started = None
            timings = self._state.timings.as_dict()
            for phase in _TIMING_PHASES:
                value = timings.get(f"{phase}_ms", 0)
                if value > 0:
                    self.observe_startup_phase(phase, value / 1000)

    def observe_startup_phase(self, phase: str, seconds: float) -> None:
        self.startup_phase_seconds.labels(phase=phase).observe(seconds)

    # --- reconcile (called by the configurator) -----------------------------

    def observe_reconfigure_phase(self, phase: str, seconds: float) -> None:
        self.reconfigure_phase_seconds.labels(phase=phase).observe(seconds)

    def observe_reconcile(self, *, seconds: float, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown reconcile outcome {outcome!r}; expected one of {OUTCOMES}")
        self.reconcile_seconds.observe(seconds)
        self.reconcile_total.labels(outcome=outcome).inc()

    @contextlib.contextmanager
    def reconcile(self) -> Iterator[ReconcileRecord]:
        """Time one reconcile pass: ``failed`` on an exception, ``cancelled`` on cancellation,
        otherwise the record's outcome (``applied`` unless the body sets ``noop``)."""
        record = ReconcileRecord()
        started = time.monotonic()
        try:
            yield record
        except BaseException as e:
            record.outcome = "failed" if isinstance(e, Exception) else "cancelled"
            raise
        finally:
            self.observe_reconcile(seconds=time.monotonic() - started, outcome=record.outcome)

    # --- postgres downtime (called by the activity monitor) -----------------

    def report_down(self, *, current_ms: float, increment_ms: float) -> None:
        self.pg_current_downtime_ms.set(current_ms)
        if increment_ms > 0:
            self.pg_downtime_ms.inc(increment_ms)

    def report_up(self) -> None:
        self.pg_current_downtime_ms.set(0)
