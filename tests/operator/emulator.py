"""kmock's API emulator with what kopf needs of an API server, and our CRD declared.

kmock 0.8 is "a database over HTTP"; kopf relies on three API-server behaviours it lacks,
added here: names from ``metadata.generateName``, a ``metadata.resourceVersion`` that
changes on every write, and HTTP 422 for a JSON patch whose version ``test`` fails. And
one cost a real API server does not have is taken away: kmock's request log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import kmock

from compute_ctl.operator import resource

__all__ = ["Emulator", "declare"]

_serial = itertools.count(1)


class Emulator(kmock.KubernetesEmulator):
    """kmock plus the API-server behaviours kopf relies on.

    - ``metadata.generateName``: kopf names its Events that way; kmock 0.8 stores objects
      under the name as sent, so every Event after the first would be refused (409).
    - ``metadata.resourceVersion`` that changes on every write: kopf compares the version
      its own patch returned with the versions of incoming watch events to tell fresh
      bodies from stale ones. With kmock's constant version, a stale event (sent before
      kopf's last-handled annotation was written) passes as fresh and kopf handles the
      same update again and again. A JSON patch whose ``test`` of the version fails gets
      the API server's 422, which kopf treats as "retry on the next event" (kmock: 500).

    And it keeps the requests it served in ``served``, not in kmock's own log. kmock
    keeps every request for assertions and finds a new request's reaction by scanning
    that log for it, once per reaction: a request took 25 ms after a few hundred (the
    operator's benchmark measured kmock, not the operator). Its log now holds only the
    requests in flight; read ``served`` instead of iterating the emulator.

    ``fault``, when a test sets it, is asked about every request: an HTTP code answers
    the request with that error and leaves the objects untouched.
    """

    served: list[kmock.Request]
    fault: Callable[[kmock.Request], int | None] | None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.served = []
        self.fault = None

    async def _handle(self, request: kmock.Request) -> Any:
        self.served.append(request)
        try:
            code = self.fault(request) if self.fault is not None else None
            if code is not None:
                raise kmock.KubernetesError(status=code, reason="Injected", message="a test fault")
            return await self._serve(request)
        finally:
            self._requests[:] = [r for r in self._requests if r is not request]

    async def _serve(self, request: kmock.Request) -> Any:
        data = request.data
        version = str(next(_serial))
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{version}"
            meta["resourceVersion"] = version
        elif request.action == kmock.action.UPDATE and isinstance(data, dict):
            data.setdefault("metadata", {})["resourceVersion"] = version
        elif request.action == kmock.action.UPDATE and isinstance(data, list):
            self._check_version(request, data)
            data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)

    def _check_version(self, request: kmock.Request, ops: list[dict[str, Any]]) -> None:
        if request.resource is None or request.name is None:
            return
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = self.objects[key].raw.get("metadata", {}).get("resourceVersion")
        for op in ops:
            tests_version = op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion"
            if tests_version and op.get("value") != current:
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message=f"resourceVersion {op.get('value')} is not {current}",
                )


def declare(api: kmock.KubernetesEmulator) -> None:
    """Discovery for kopf: the bundled built-ins (namespaces, events) and our CRD."""
    api.resources.load_bundled()
    api.resources[f"{resource.GROUP}/{resource.VERSION}/{resource.PLURAL}"] = kmock.ResourceInfo(
        kind=resource.KIND,
        singular=resource.SINGULAR,
        shortnames={resource.SHORT_NAME},
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    )
