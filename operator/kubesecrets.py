"""Reading the Secrets a resource references: one ``GET`` per Secret, by name.

The operator reads only the Secrets ``spec.credentials`` names, each with
``GET /api/v1/namespaces/NS/secrets/NAME``: the one verb RBAC can pin to a list of names
(``resourceNames``) without a field selector. It neither lists nor watches Secrets; a
changed Secret is found by reading it again (its ``resourceVersion``) every
``--secret-interval`` (``Reconciler.due``). The connection is kopf's own login
(``kopf.ConnectionInfo``: the ServiceAccount token in a pod, else ``$KUBECONFIG``),
handed over by the login handler and read again after a 401 (a rotated token).

Failures become ``secretrefs.SecretUnavailable`` (``not_found`` for a 404). Response bodies are
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Protocol

import aiohttp

from compute_ctl.operator import secretrefs

__all__ = ["Connection", "SecretReader"]

logger = logging.getLogger(__name__)


class Connection(Protocol):
    """What the reader needs of a login (``kopf.ConnectionInfo`` is one)."""

    @property
    def server(self) -> str: ...

    def as_ssl_context(self) -> ssl.SSLContext: ...

    def as_http_headers(self) -> dict[str, str]: ...


class SecretReader:
    """Reads Secrets of one namespace; ``aclose()`` when done (``contextlib.aclosing``)."""

    def __init__(
        self,
        *,
        namespace: str,
        login: Callable[[], Connection | None],
        timeout: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self._login = login
        self._timeout = timeout
        self._info: Connection | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _connect(self, *, fresh: bool) -> tuple[aiohttp.ClientSession, str]:
        async with self._lock:
            if fresh or self._session is None or self._info is None:
                await self._close()
                info = self._login()
                if info is None:
                    raise secretrefs.SecretUnavailable("no Kubernetes credentials for Secrets")
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                    headers={**info.as_http_headers(), "User-Agent": "compute-ctl-operator"},
                )
                self._info = info
            return self._session, self._info.server.rstrip("/")

    async def read(self, name: str) -> secretrefs.Secret:
        path = (
            f"/api/v1/namespaces/{urllib.parse.quote(self.namespace, safe='')}"
            f"/secrets/{urllib.parse.quote(name, safe='')}"
        )
        for fresh in (False, True):
            session, server = await self._connect(fresh=fresh)
            try:
                async with session.get(
                    server + path, timeout=aiohttp.ClientTimeout(total=self._timeout)
                ) as response:
                    code = response.status
                    body = await response.json(content_type=None) if code == 200 else None
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise secretrefs.SecretUnavailable(
                    f"Secret {name!r}: the API server cannot be reached ({type(exc).__name__})"
                ) from None
            if code == 401 and not fresh:
                continue  # a rotated token: log in again, once
            break
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
