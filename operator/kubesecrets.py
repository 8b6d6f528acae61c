"""Reading the Secrets a resource references: one ``GET`` per Secret, by name.

The operator reads only the Secrets ``spec.credentials`` names, each with
``GET /api/v1/namespaces/NS/secrets/NAME``: the one verb RBAC can pin to a list of names
(``resourceNames``) without a field selector. It neither lists nor watches Secrets; a
changed Secret is found by reading it again (its ``resourceVersion``) every
``--secret-interval`` (``Reconciler.due``). The requests go through ``kubeapi`` (kopf's
own login).

Failures become ``secretrefs.SecretUnavailable`` (``not_found`` for a 404). Response bodies are
never logged.
"""

from __future__ import annotations

import urllib.parse

from compute_ctl.operator import kubeapi, secretrefs

__all__ = ["SecretReader"]


class SecretReader:
    """Reads Secrets of one namespace through ``api``."""

    def __init__(self, *, namespace: str, api: kubeapi.ApiSession) -> None:
        self.namespace = namespace
        self._api = api

    async def read(self, name: str) -> secretrefs.Secret:
        path = (
            f"/api/v1/namespaces/{urllib.parse.quote(self.namespace, safe='')}"
            f"/secrets/{urllib.parse.quote(name, safe='')}"
        )
        try:
            code, body = await self._api.request("GET", path)
        except kubeapi.Unreachable as exc:
            raise secretrefs.SecretUnavailable(f"Secret {name!r}: {exc}") from None
        if code == 404:
            raise secretrefs.SecretUnavailable(f"Secret {name!r} not found", not_found=True)
        if code == 403:
            raise secretrefs.SecretUnavailable(
                f"Secret {name!r}: forbidden (the operator's Role must name it in "
                "resourceNames, verb get)",
                forbidden=True,
            )
        if code != 200 or not isinstance(body, dict):
            raise secretrefs.SecretUnavailable(f"Secret {name!r}: HTTP {code} from the API server")
        meta = body.get("metadata") or {}
        data = body.get("data") or {}
        return secretrefs.Secret(
            name=name,
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            data={str(k): str(v) for k, v in data.items()},
        )
