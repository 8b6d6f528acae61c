"""The operator's own requests to the Kubernetes API server, on kopf's login.

Besides kopf, the operator talks to the API server for two things: reading the Secrets a
resource references (``kubesecrets``) and writing the resource's status (``kubestatus``).
Both go through one ``ApiSession``: its connection is kopf's own login
(``kopf.ConnectionInfo``: the ServiceAccount token in a pod, else ``$KUBECONFIG``), handed
over by the login handler and read again after a 401 (a rotated token).

A request that gets no answer raises ``Unreachable``, which names only the error's type.
Response bodies are never logged.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp

__all__ = ["ApiSession", "Connection", "NoLogin", "Unreachable"]


class Connection(Protocol):
    """What the session needs of a login (``kopf.ConnectionInfo`` is one)."""

    @property
    def server(self) -> str: ...

    def as_ssl_context(self) -> ssl.SSLContext: ...

    def as_http_headers(self) -> dict[str, str]: ...


class Unreachable(Exception):
    """The API server gave no answer (connection refused, timeout, unreadable body)."""


class NoLogin(Unreachable):
    """No credentials to reach the API server with."""


class ApiSession:
    """Requests to one API server; ``aclose()`` when done (``contextlib.aclosing``)."""

    def __init__(
        self,
        *,
        login: Callable[[], Connection | None],
        timeout: float = 10.0,
    ) -> None:
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
                    raise NoLogin("no Kubernetes credentials")
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                    headers={**info.as_http_headers(), "User-Agent": "compute-ctl-operator"},
                )
                self._info = info
            return self._session, self._info.server.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """HTTP code and, for a 200, the decoded JSON body (``None`` otherwise).

        ``body`` is sent as JSON. A 401 logs in again once (a rotated token).
        """
        data = None if body is None else json.dumps(body)
        for fresh in (False, True):
            session, server = await self._connect(fresh=fresh)
            try:
                async with session.request(
                    method,
                    server + path,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as response:
                    code = response.status
                    answer = await response.json(content_type=None) if code == 200 else None
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise Unreachable(
                    f"the API server cannot be reached ({type(exc).__name__})"
                ) from None
            if code != 401 or fresh:
                break
        return code, answer
