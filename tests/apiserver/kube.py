"""Small helpers the real-API tests share: clients, waiting, namespaces, tokens, apply.

Owns test-side plumbing over the ``kubernetes`` client only; it starts no process and
knows nothing of the operator's internals (it reads the CRD and manifests as files).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from kubernetes.dynamic import DynamicClient

__all__ = [
    "api_client",
    "crd_names",
    "create_namespace",
    "load_documents",
    "server_side_apply",
    "service_account_token",
    "wait_crd_established",
    "wait_for",
]

T = TypeVar("T")


def api_client(kubeconfig: Path) -> Any:
    """A fresh ``ApiClient`` for one kubeconfig (never the process-wide default)."""
    return kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.1,
    fatal: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``probe`` until it returns something truthy; its last exception is reported.
    Exceptions of the ``fatal`` types end the wait at once."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except fatal:
            raise
        except Exception as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from last_error
        time.sleep(interval)


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_names(crd: dict[str, Any]) -> tuple[str, str, str, str]:
    """(group, served storage version, plural, kind) of a CRD document."""
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return spec["group"], version, spec["names"]["plural"], spec["names"]["kind"]


def wait_crd_established(client: Any, name: str) -> None:
    ext: Any = kubernetes.client.ApiextensionsV1Api(client)

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, what=f"CRD {name} Established")


def create_namespace(client: Any, *, prefix: str = "t") -> str:
    """A fresh namespace with a ``default`` ServiceAccount (no controller makes one here)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core: Any = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    return name


def service_account_token(client: Any, *, namespace: str, name: str) -> str:
    """A bound token for a ServiceAccount from the TokenRequest API (1 h)."""
    core: Any = kubernetes.client.CoreV1Api(client)
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    token: str = request.status.token
    return token


def server_side_apply(
    client: Any,
    documents: Iterable[dict[str, Any]],
    *,
    namespace: str | None,
    dry_run: bool,
    field_manager: str = "compute-ctl-tests",
) -> list[dict[str, Any]]:
    """Server-side apply each document (namespaced ones into ``namespace``); returns results."""
    dynamic = DynamicClient(client)  # type: ignore[no-untyped-call]
    results = []
    for doc in documents:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        body = doc
        if resource.namespaced:
            if namespace is None:
                raise ValueError(f"{doc['kind']} {doc['metadata']['name']} needs a namespace")
            body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        result = resource.server_side_apply(
            body=body,
            name=doc["metadata"]["name"],
            namespace=namespace if resource.namespaced else None,
            field_manager=field_manager,
            force_conflicts=True,
            dry_run="All" if dry_run else None,
        )
        results.append(result.to_dict())
    return results
