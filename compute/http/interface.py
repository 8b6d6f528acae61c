"""The node as the HTTP layer sees it: ``typing.Protocol``s, no implementation.

Routes depend on these seams, not on ``compute.node.ComputeNode``, so the API can be
served for a test double (a real ``ComputeState`` over a real PostgreSQL) and the
node never has to be imported here. ``ComputeNode`` satisfies ``Node`` structurally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from compute_ctl.compute import admission, api_models, pgtools
from compute_ctl.compute import failpoints as failpoints_mod
from compute_ctl.compute import promote as promote_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.remote_ext import server as remote_ext_server

__all__ = ["Lfc", "Node", "NodeParams", "Plan", "TerminateMode"]

TerminateMode = Literal["fast", "immediate"]


class NodeParams(Protocol):
    """The static settings the HTTP layer reads (a subset of ``compute.params.Params``)."""

    @property
    def compute_id(self) -> str: ...

    @property
    def external_http_host(self) -> str: ...

    @property
    def external_http_port(self) -> int: ...

    @property
    def internal_http_port(self) -> int: ...

    @property
    def allow_unauthenticated(self) -> bool: ...

    @property
    def internal_full_api(self) -> bool: ...

    @property
    def failed_exit_delay(self) -> float: ...

    @property
    def build_tag(self) -> str: ...


class Plan(Protocol):
    """A catalog plan (``compute.catalog.plan.Plan``): rendered with secrets redacted."""

    def to_json(self) -> Sequence[Mapping[str, object]]: ...


class Lfc(Protocol):
    """Cache prewarm and offload (``compute.lfc.controller.Lfc``)."""

    @property
    def prewarm_state(self) -> api_models.LfcPrewarmState: ...

    @property
    def offload_state(self) -> api_models.LfcOffloadState: ...

    def start_prewarm(self, *, from_endpoint: str | None = None) -> object: ...

    def cancel_prewarm(self) -> None: ...

    def start_offload(self) -> object: ...


class Node(Protocol):
    """What the routes call. Semantics are ``compute.node.ComputeNode``'s (see its docstrings)."""

    @property
    def params(self) -> NodeParams: ...

    @property
    def state(self) -> state_mod.ComputeState: ...

    @property
    def failpoints(self) -> failpoints_mod.Failpoints: ...

    @property
    def tools(self) -> pgtools.PgTools: ...

    @property
    def lfc(self) -> Lfc: ...

    @property
    def extension_server(self) -> remote_ext_server.ExtensionServer: ...

    def admit(self, config: spec_mod.ComputeConfig) -> admission.AdmittedConfig: ...

    async def configure(self, config: admission.AdmittedConfig) -> None: ...

    async def terminate(self, mode: TerminateMode) -> tuple[bool, str | None]: ...

    async def plan(self, admitted: admission.Admitted) -> Plan: ...

    async def promote(
        self, admitted: admission.Admitted, *, wal_flush_lsn: str
    ) -> promote_mod.Outcome: ...

    def connstr(self, dbname: str = "postgres") -> str: ...
