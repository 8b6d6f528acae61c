"""A test double of the node for the HTTP tier: a real ``ComputeState`` over a real PostgreSQL.

It implements ``compute.http.interface.Node`` with Neon's semantics in miniature:
``configure`` stores the desired spec and lets a tiny configurator task apply it (or fail
it, when the spec asks for it through a setting), ``terminate`` walks the status to
``terminated``. Tests use it to exercise routes without the real node; tests that need
the real thing use ``compute_ctl`` itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import conninfo as conninfo_mod

from compute_ctl.compute import admission, errors, failpoints, metrics, pgtools
from compute_ctl.compute import promote as promote_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import interface
from compute_ctl.compute.lfc import controller as lfc
from compute_ctl.compute.remote_ext import server as remote_ext_server
from tests import pgserver

S = state_mod.ComputeStatus
FAIL_SETTING = "test.fail_configure"
"""A cluster setting that makes the double's configurator fail the spec."""


@dataclasses.dataclass(frozen=True)
class Params:
    compute_id: str
    external_http_port: int
    internal_http_port: int
    external_http_host: str = "127.0.0.1"
    allow_unauthenticated: bool = False
    internal_full_api: bool = True
    failed_exit_delay: float = 30.0
    build_tag: str = "test-build"


@dataclasses.dataclass(frozen=True)
class Plan:
    items: tuple[Mapping[str, object], ...]

    def to_json(self) -> Sequence[Mapping[str, object]]:
        return list(self.items)


def minimal_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "format_version": 1.0,
        "suspend_timeout_seconds": 300,
        "cluster": {"roles": [], "databases": [], "settings": []},
    }
    spec.update(overrides)
    return spec


class NodeDouble:
    def __init__(
        self,
        *,
        params: Params,
        dsn: str,
        failpoints_enabled: bool = False,
    ) -> None:
        self.params = params
        self.state = state_mod.ComputeState()
        self.failpoints = failpoints.Failpoints(enabled=failpoints_enabled)
        self.tools: pgtools.PgTools = pgserver.tools()
        # Remote extensions off (no -r); tests that need them replace it.
        self.extension_server = remote_ext_server.ExtensionServer(
            base_url=None,
            build_tag="latest",
            tools=self.tools,
            metrics=metrics.Metrics(build_tag="latest", state=self.state),
        )
        self._dsn = dsn
        self.lfc = lfc.Lfc(
            spec=lambda: self.state.applied,
            connstr=self.connstr,
            metrics=metrics.Metrics(build_tag=params.build_tag, state=self.state),
        )
        self.configure_calls = 0
        self.plan_calls = 0
        self._configurator: asyncio.Task[None] | None = None

    def connstr(self, dbname: str = "postgres") -> str:
        return conninfo_mod.make_conninfo(self._dsn, dbname=dbname)

    async def start_running(self, spec: spec_mod.ComputeSpec | None = None) -> None:
        """Bring the double to ``running`` as the node's start path would."""
        spec = spec or spec_mod.ComputeSpec.model_validate(minimal_spec())
        async with self.state.lock():
            generation = self.state.set_desired(spec)
            self.state.set_status(S.INIT)
            self.state.set_applied(spec, generation)
            self.state.set_status(S.RUNNING)

    def admit(self, config: spec_mod.ComputeConfig) -> admission.AdmittedConfig:
        """The real admission, with the rules of a compute whose flags are the defaults."""
        return admission.admit_config(config, rules=admission.Rules())

    async def configure(self, config: admission.AdmittedConfig) -> None:
        self.configure_calls += 1
        if config.spec is None:
            raise errors.ConfigError("spec must be set")
        spec = config.spec.spec
        async with self.state.lock():
            if self.state.status not in (S.EMPTY, S.RUNNING):
                raise errors.StatusError(f"invalid compute status: {self.state.status.kebab}")
            generation = self.state.set_desired(spec)
            self.state.set_status(S.CONFIGURATION_PENDING)
        self._configurator = asyncio.create_task(self._apply(spec, generation))
        await self.state.wait_for(
            lambda s: s.applied_generation >= generation or s.status == S.FAILED
        )
        if self._failed():
            raise errors.ComputeError(f"compute configuration failed: {self.state.error}")

    def _failed(self) -> bool:
        return self.state.status == S.FAILED

    async def _apply(self, spec: spec_mod.ComputeSpec, generation: int) -> None:
        await self.failpoints.hit("configurator-apply")
        async with self.state.lock():
            self.state.set_status(S.CONFIGURATION)
            if spec.cluster.setting(FAIL_SETTING) is not None:
                self.state.set_status(S.FAILED, error="apply failed: test failure")
                return
            self.state.set_applied(spec, generation)
            self.state.set_status(S.RUNNING)

    async def terminate(self, mode: interface.TerminateMode) -> tuple[bool, str | None]:
        async with self.state.lock():
            if self.state.status == S.TERMINATED:
                return True, self.state.terminate_lsn
            if self.state.status not in (S.EMPTY, S.RUNNING):
                raise errors.StatusError(f"invalid compute status: {self.state.status.kebab}")
            self.state.set_status(
                S.TERMINATION_PENDING_FAST if mode == "fast" else S.TERMINATION_PENDING_IMMEDIATE
            )
            self.state.terminate_lsn = "0/15D3A28"
            self.state.set_status(S.TERMINATED)
            return False, self.state.terminate_lsn

    async def plan(self, admitted: admission.Admitted) -> Plan:
        self.plan_calls += 1
        spec = admitted.spec
        return Plan(
            items=tuple(
                {
                    "phase": "CreateAndAlterRoles",
                    "database": None,
                    "sql": f"CREATE ROLE {role.name!r} LOGIN PASSWORD <redacted>",
                    "comment": f"create role {role.name}",
                }
                for role in spec.cluster.roles
            )
        )

    async def promote(
        self, admitted: admission.Admitted, *, wal_flush_lsn: str
    ) -> promote_mod.Outcome:
        """The double is a primary: Neon's answer to promoting one."""
        return promote_mod.Outcome.failed('compute mode "primary" is not replica')


UNREACHABLE_DSN = "postgresql://cloud_admin@127.0.0.1:1/postgres"


def offline(
    *,
    external_http_port: int = 0,
    internal_http_port: int = 0,
    allow_unauthenticated: bool = False,
    internal_full_api: bool = True,
) -> NodeDouble:
    """A double with no postgres behind it (its DSN points at a closed loopback port), for
    tests of routing and of handlers that must answer before touching postgres."""
    return NodeDouble(
        params=Params(
            compute_id="c",
            external_http_port=external_http_port,
            internal_http_port=internal_http_port,
            allow_unauthenticated=allow_unauthenticated,
            internal_full_api=internal_full_api,
        ),
        dsn=UNREACHABLE_DSN,
    )


def _check_protocol(node: NodeDouble) -> interface.Node:
    return node  # mypy proves the double satisfies the protocol
