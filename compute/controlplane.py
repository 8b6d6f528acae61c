"""Fetching the compute's config from the control plane (``-p/--control-plane-uri``).

Neon's ``get_config_from_control_plane``: ``GET {uri}/compute/api/v2/computes/{id}/spec``
with ``Authorization: Bearer $NEON_CONTROL_PLANE_TOKEN``, at most 3 attempts 100 ms apart,
retrying network errors, 502, 503 and unparsable JSON. The reply is a ``ComputeConfig``
plus ``"status": "empty" | "attached"``; ``attached`` without a spec is an error. Any
failure raises ``errors.ConfigError``, whose text never includes the token.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import pydantic

from compute_ctl.compute import errors
from compute_ctl.compute import spec as spec_mod

__all__ = ["fetch_config", "spec_url"]

logger = logging.getLogger(__name__)

ATTEMPTS = 3
RETRY_DELAY_S = 0.1
_RETRYABLE_STATUS = frozenset({502, 503})


def spec_url(uri: str, compute_id: str) -> str:
    compute = urllib.parse.quote(compute_id, safe="")
    return f"{uri.rstrip('/')}/compute/api/v2/computes/{compute}/spec"


class _Retry(Exception):
    pass


def status_text(code: int) -> str:
    """An HTTP status as Neon's metric label prints it (Rust ``http``'s Display): ``200 OK``."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


async def _attempt(
    session: Any, url: str, headers: dict[str, str], record: Callable[[str], None]
) -> dict[str, Any]:
    import aiohttp  # only the -p path pays for aiohttp's client

    try:
        async with session.get(url, headers=headers) as response:
            record(status_text(response.status))
            body = await response.text()
            if response.status in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {response.status}")
            if response.status != 200:
                raise errors.ConfigError(
                    f"control plane answered HTTP {response.status} for {url}: {body[:300]}"
                )
    except (aiohttp.ClientError, TimeoutError) as e:
        record("unknown")
        raise _Retry(f"{type(e).__name__}: {e}") from e
    try:
        reply = json.loads(body)
    except ValueError as e:
        raise _Retry(f"invalid JSON: {e}") from e
    if not isinstance(reply, dict):
        raise _Retry("the reply is not a JSON object")
    return reply


def _parse(reply: dict[str, Any]) -> spec_mod.ComputeConfig:
    status = reply.get("status", "attached")
    if status not in ("empty", "attached"):
        raise errors.ConfigError(f"control plane reply: unknown status {status!r}")
    try:
        config = spec_mod.ComputeConfig.model_validate(reply)
    except pydantic.ValidationError as e:
        raise errors.ConfigError(
            f"control plane reply: {spec_mod.format_validation_error(e)}"
        ) from e
    if status == "attached" and config.spec is None:
        raise errors.ConfigError("control plane reply: status is attached but there is no spec")
    if status == "empty":
        config = config.model_copy(update={"spec": None})
    return config


async def fetch_config(
    *,
    uri: str,
    compute_id: str,
    token: str | None,
    timeout: float = 10.0,
    record: Callable[[str], None] = lambda status: None,
) -> spec_mod.ComputeConfig:
    """The compute's ``ComputeConfig`` from the control plane (``spec`` None when empty).

    ``record`` gets each attempt's outcome for ``compute_ctl_cplane_requests_total``:
    ``"200 OK"``-style, or ``unknown`` when no answer came."""
    import aiohttp

    url = spec_url(uri, compute_id)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                reply = await _attempt(session, url, headers, record)
            except _Retry as e:
                last = str(e)
                logger.warning("control plane attempt %d/%d failed: %s", attempt, ATTEMPTS, last)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(RETRY_DELAY_S)
                continue
            return _parse(reply)
    raise errors.ConfigError(
        f"could not get the spec from the control plane after {ATTEMPTS} attempts: {last}"
    )
