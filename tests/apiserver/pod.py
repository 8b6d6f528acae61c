"""One emulated compute pod for the end-to-end tests: compute_ctl, the operator, its resource.

Owns the wiring (the resource's spec carries the compute's port; the operator runs as the
shipped ServiceAccount) and the waiting (conditions with deadlines whose failures carry
both processes' log tails). It asserts nothing itself.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import psycopg

from tests.apiserver import controlplane, kube, processes
from tests.apiserver import resources as resources_

__all__ = ["Pod", "running_pod"]


class _Hopeless(Exception):
    """A wait that can no longer succeed."""


@dataclasses.dataclass
class Pod:
    name: str
    compute: processes.Compute
    operator: processes.Operator
    resources: resources_.Resources
    admin: Any
    plane: controlplane.ControlPlane
    account: str  # the operator's username, as the API server sees it

    @property
    def finalizer(self) -> str:
        """The operator's one finalizer (``<group>/terminate``)."""
        return f"{self.resources.group}/terminate"

    def spec(
        self,
        *,
        roles: tuple[str, ...] = ("app",),
        databases: tuple[str, ...] = ("app",),
        settings: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A valid ComputeSpec for this compute (its port and loopback listen address, plus
        ``settings``); databases are owned by the first role."""
        spec = resources_.minimal_spec(roles=roles, databases=databases)
        spec["cluster"]["settings"] = self.compute.settings() + [
            {"name": k, "value": v, "vartype": "string"} for k, v in (settings or {}).items()
        ]
        return spec

    def get(self) -> dict[str, Any]:
        return self.resources.get(self.name)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get().get("status") or {}
        return status

    @staticmethod
    def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
        for cond in status.get("conditions") or []:
            if cond["type"] == kind:
                found: dict[str, Any] = cond
                return found
        return {}

    def wait(self, probe: Callable[[], Any], *, what: str, timeout: float = 45.0) -> Any:
        try:
            return kube.wait_for(probe, what=what, timeout=timeout, fatal=(_Hopeless,))
        except (TimeoutError, _Hopeless) as e:
            raise TimeoutError(
                f"{e}\n--- resource status: {self._status_quietly()}"
                f"\n--- operator log:\n{self.operator.log_tail()}"
                f"\n--- compute_ctl log:\n{self.compute.log_tail()}"
            ) from e

    def _status_quietly(self) -> Any:
        with contextlib.suppress(kubernetes.client.ApiException):
            return self.status()
        return None

    def wait_reconciled(self, generation: int, *, timeout: float = 45.0) -> dict[str, Any]:
        """Until the status says: this generation observed, Ready, Reconciled.

        Gives up at once when the compute has failed (it would never get there)."""

        def reconciled() -> dict[str, Any] | None:
            status = self.status()
            if status.get("status") == "failed":
                raise _Hopeless(f"the compute failed: {status.get('lastError')}")
            ok = (
                status.get("observedGeneration") == generation
                and self.condition(status, "Ready").get("status") == "True"
                and self.condition(status, "Reconciled").get("status") == "True"
            )
            return status if ok else None

        status: dict[str, Any] = self.wait(
            reconciled, what=f"generation {generation} reconciled", timeout=timeout
        )
        return status

    def events(self, reason: str | None = None) -> list[Any]:
        """Events about this resource, oldest first (optionally of one reason)."""
        core: Any = kubernetes.client.CoreV1Api(self.admin)
        items = core.list_namespaced_event(
            self.resources.namespace, field_selector=f"involvedObject.name={self.name}"
        ).items
        return [e for e in items if reason is None or e.reason == reason]

    def catalog(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.compute.superuser_dsn(), autocommit=True) as conn:
            return conn.execute(query).fetchall()

    def operator_requests(self, *, resource: str | None = None) -> list[dict[str, Any]]:
        """The operator's requests to the API server (audit events), oldest first."""
        events = self.plane.audit_events(user=self.account)
        return [
            e
            for e in events
            if resource is None or e.get("objectRef", {}).get("resource") == resource
        ]


@contextlib.contextmanager
def running_pod(
    *,
    admin: Any,
    plane: controlplane.ControlPlane,
    resources: resources_.Resources,
    kubeconfig: Any,
    account: str,
    name: str = "compute-1",
    resync_interval: float = 60.0,
    spec: Callable[[Pod], dict[str, Any]] | None = None,
    key_file: bool = True,
    compute_env: dict[str, str] | None = None,
    credentials: dict[str, Any] | None = None,
    secret_interval: float | None = None,
    operator_log_level: str = "DEBUG",
    start_timeout: float = 45.0,
) -> Iterator[Pod]:
    """compute_ctl started, the resource created (with ``spec.credentials`` if given), the
    operator started; stopped on exit."""
    compute = processes.Compute(compute_id=name)
    operator = processes.Operator(
        compute.workdir,
        name=name,
        namespace=resources.namespace,
        kubeconfig=kubeconfig,
        compute_url=compute.url,
        key_file=compute.keys.private if key_file else None,
    )
    pod = Pod(
        name=name,
        compute=compute,
        operator=operator,
        resources=resources,
        admin=admin,
        plane=plane,
        account=account,
    )
    try:
        compute.start(env=compute_env)
        pod.wait(compute.try_status, what="compute_ctl's internal API", timeout=start_timeout)
        body = copy.deepcopy(spec(pod) if spec else pod.spec())
        resources.create(name, body, credentials)
        operator.start(
            resync_interval=resync_interval,
            secret_interval=secret_interval,
            log_level=operator_log_level,
        )
        yield pod
    finally:
        operator.stop()
        compute.stop()
        shutil.rmtree(compute.workdir, ignore_errors=True)
