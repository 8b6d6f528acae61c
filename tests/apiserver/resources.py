"""ComputeSpec resources for the real-API tests: valid bodies and raw CRUD on the CRD.

Owns the shape of a test resource (a minimal valid ComputeSpec under ``.spec.computeSpec``)
and thin wrappers over ``CustomObjectsApi``; it starts nothing and asserts nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes

__all__ = ["Resources", "minimal_spec"]


def minimal_spec(*, roles: tuple[str, ...] = (), databases: tuple[str, ...] = ()) -> dict[str, Any]:
    """The smallest ComputeSpec compute_ctl accepts (local mode: no Neon storage)."""
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "roles": [{"name": r} for r in roles],
            "databases": [
                {"name": d, "owner": roles[0] if roles else "cloud_admin"} for d in databases
            ],
            "settings": [],
        },
    }


class Resources:
    """CRUD on ComputeSpec objects of one namespace through ``CustomObjectsApi``."""

    def __init__(
        self, client: Any, *, group: str, version: str, plural: str, kind: str, namespace: str
    ) -> None:
        self.api: Any = kubernetes.client.CustomObjectsApi(client)
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespace = namespace

    def _args(self) -> tuple[str, str, str, str]:
        return self.group, self.version, self.namespace, self.plural

    FIELD = "spec.computeSpec"
    """Where the ComputeSpec sits in the resource (as the server names it in errors)."""

    @staticmethod
    def wrap(compute_spec: dict[str, Any]) -> dict[str, Any]:
        """A resource ``.spec`` (or a patch of it) holding this ComputeSpec (or patch)."""
        return {"computeSpec": compute_spec}

    def body(
        self,
        name: str,
        spec: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A resource whose ComputeSpec is ``spec`` (default: ``minimal_spec()``), with
        ``spec.credentials`` (Secret references) if given."""
        body: dict[str, Any] = {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": self.wrap(copy.deepcopy(spec if spec is not None else minimal_spec())),
        }
        if credentials is not None:
            body["spec"]["credentials"] = copy.deepcopy(credentials)
        return body

    def compute_spec(self, obj: dict[str, Any]) -> dict[str, Any]:
        value: dict[str, Any] = obj["spec"]["computeSpec"]
        return value

    def patch_spec(self, name: str, compute_spec_patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the resource's ComputeSpec."""
        return self.patch(name, {"spec": self.wrap(compute_spec_patch)})

    def create(
        self,
        name: str,
        spec: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        created: dict[str, Any] = self.api.create_namespaced_custom_object(
            *self._args(), self.body(name, spec, credentials)
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.get_namespaced_custom_object(*self._args(), name)
        return obj

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.patch_namespaced_custom_object(*self._args(), name, patch)
        return obj

    def patch_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.patch_namespaced_custom_object_status(
            *self._args(), name, patch
        )
        return obj

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.replace_namespaced_custom_object(*self._args(), name, body)
        return obj

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(*self._args(), name)

    def list(self, **params: Any) -> dict[str, Any]:
        listing: dict[str, Any] = self.api.list_namespaced_custom_object(*self._args(), **params)
        return listing

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True
