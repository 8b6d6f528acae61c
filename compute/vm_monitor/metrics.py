"""Prometheus counters of the vm-monitor (upstream's monitor has none; the agent has its own).

Registered on the registry the caller passes in, and unregistered by ``close`` so that a
monitor restarted with postgres can register again on the same registry. This module
counts; it never decides.
"""

from __future__ import annotations

import enum

import prometheus_client

__all__ = ["Decision", "Metrics"]


class Decision(enum.StrEnum):
    """The outcome of a DownscaleRequest (a label value: stable)."""

    APPROVED = "approved"
    DENIED = "denied"
    ERROR = "error"


class Metrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self._registry = registry
        self._closed = False
        self.connections = prometheus_client.Counter(
            "vm_monitor_connections_total",
            "Agent websocket connections, by how their setup ended",
            ["outcome"],
            registry=registry,
        )
        self.requests = prometheus_client.Counter(
            "vm_monitor_requests_total",
            "Messages received from the autoscaler-agent, by type ('invalid': unparseable)",
            ["type"],
            registry=registry,
        )
        self.decisions = prometheus_client.Counter(
            "vm_monitor_downscale_decisions_total",
            "Answers to DownscaleRequest",
            ["decision"],
            registry=registry,
        )
        self.upscale_requests = prometheus_client.Counter(
            "vm_monitor_upscale_requests_total",
            "UpscaleRequest messages sent to the agent under memory pressure",
            registry=registry,
        )
        for decision in Decision:
            self.decisions.labels(decision=decision.value)

    def close(self) -> None:
        """Unregister (once; closing twice is a no-op)."""
        if self._closed:
            return
        self._closed = True
        for collector in (self.connections, self.requests, self.decisions, self.upscale_requests):
            self._registry.unregister(collector)
