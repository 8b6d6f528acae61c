"""A client of compute_ctl's internal HTTP API, as the operator uses it.

The operator is just another client of compute_ctl: it reads ``GET /status`` and
``GET /metrics.json``, pushes specs with ``POST /configure`` and ends the compute with
``POST /terminate``, over the external API with a signed JWT (``credentials``), as a
control plane does. (The internal port serves none of these: anything in the pod's
network namespace, postgres included, can reach it.) aiohttp failures and HTTP error
codes are translated here, once, into ``ComputeApiError``'s tree; bodies are parsed with
the wire contract's models (``compute.api_models``), shared with the server::

    ComputeApiError
    ├── ComputeUnreachable    connection refused/reset, timeout: compute_ctl is not there
    ├── ComputePrecondition   412: busy, not allowed in this status, or If-Match mismatch
    ├── ComputeRejected       400: compute_ctl refused the spec (nothing was changed)
    ├── ComputeFailed         500: the configuration was attempted and failed
    └── ComputeProtocolError  anything else (an unexpected code or body)

The messages carry compute_ctl's ``{"error": ...}`` text, never the spec (which may hold
password hashes). No kopf here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp
import pydantic

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "ComputeApiError",
    "ComputeClient",
    "ComputeFailed",
    "ComputePrecondition",
    "ComputeProtocolError",
    "ComputeRejected",
    "ComputeUnreachable",
    "Terminated",
]

logger = logging.getLogger(__name__)


class ComputeApiError(Exception):
    """Root of the failures of a call to compute_ctl."""


class ComputeUnreachable(ComputeApiError):
    pass


class ComputePrecondition(ComputeApiError):
    pass


class ComputeRejected(ComputeApiError):
    pass


class ComputeFailed(ComputeApiError):
    pass


class ComputeProtocolError(ComputeApiError):
    pass


@dataclasses.dataclass(frozen=True)
class Terminated:
    already: bool  # 201: it was terminated before this call
    lsn: str | None


class ComputeClient:
    """One aiohttp session to one compute_ctl. Use as an async context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        request_timeout: float = 10.0,
        configure_timeout: float = 300.0,
        auth: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self.request_timeout = request_timeout
        self.configure_timeout = configure_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ComputeClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def status(self) -> api_models.ComputeStatusResponse:
        body = await self._call("GET", "/status", timeout=self.request_timeout)
        return _parse(api_models.ComputeStatusResponse, body, what="GET /status")

    async def timings(self) -> dict[str, int]:
        body = await self._call("GET", "/metrics.json", timeout=self.request_timeout)
        return {str(k): int(v) for k, v in body.items() if isinstance(v, int | float)}

    async def configure(
        self, spec: spec_mod.ComputeSpec, *, if_match: str | None
    ) -> api_models.ComputeStatusResponse:
        """Push a spec and wait until compute_ctl applied it (or failed to); the status it
        answers with (Neon's ``/configure`` returns the ``/status`` document)."""
        body = api_models.ConfigureRequest(spec=spec).model_dump(mode="json", exclude_none=True)
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        answer = await self._call(
            "POST", "/configure", json_body=body, headers=headers, timeout=self.configure_timeout
        )
        return _parse(api_models.ComputeStatusResponse, answer, what="POST /configure")

    async def terminate(self, mode: Literal["fast", "immediate"]) -> Terminated:
        body, code = await self._call_with_code(
            "POST", f"/terminate?mode={mode}", timeout=self.configure_timeout
        )
        answer = _parse(api_models.TerminateResponse, body, what=f"POST /terminate?mode={mode}")
        return Terminated(already=code == 201, lsn=answer.lsn or None)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body, _ = await self._call_with_code(
            method, path, timeout=timeout, json_body=json_body, headers=headers
        )
        return body

    async def _call_with_code(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], int]:
        if self._session is None:
            raise RuntimeError("ComputeClient used outside 'async with'")
        url = self.base_url + path
        if self._auth is not None:
            try:
                headers = {**(headers or {}), **self._auth()}
            except Exception as exc:  # the key file: missing, unreadable, not a key
                raise ComputeProtocolError(f"{method} {path}: no credentials: {exc}") from exc
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                code = response.status
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ComputeUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        body = _json_object(text)
        if 200 <= code < 300:
            return body, code
        try:
            error = api_models.ErrorBody.model_validate(body).error
        except pydantic.ValidationError:
            error = text[:200]
        message = f"{method} {path}: HTTP {code}: {error}"
        logger.debug("compute_ctl answered %s", message)
        if code == 412:
            raise ComputePrecondition(message)
        if code == 400:
            raise ComputeRejected(message)
        if code == 500:
            raise ComputeFailed(message)
        raise ComputeProtocolError(message)


_M = TypeVar("_M", bound=pydantic.BaseModel)


def _parse(model: type[_M], body: dict[str, Any], *, what: str) -> _M:
    """A 2xx body as its wire model (``api_models``); a mismatch is a protocol error."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as e:
        raise ComputeProtocolError(
            f"{what}: unexpected body: {spec_mod.format_validation_error(e)}"
        ) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
