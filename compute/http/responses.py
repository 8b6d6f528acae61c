"""Shared response shapes of the HTTP API: JSON bodies, errors, the status document.

Owns ``ApiError`` (raised anywhere below a route, rendered by the error middleware as
``{"error": "..."}``), the ``/status`` body, the app keys and the small parsing helpers
every route uses (JSON body, boolean query flags). It never talks to PostgreSQL.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from aiohttp import web

from compute_ctl.compute import errors
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import interface

__all__ = [
    "METRICS",
    "NODE",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "STATUS_CACHE",
    "ApiError",
    "StatusCache",
    "error",
    "from_compute_error",
    "json_bytes_response",
    "json_response",
    "parse_json",
    "query_flag",
    "read_json",
    "require_running",
    "rfc3339",
    "status_body",
    "status_response",
    "stream_response",
]

NODE = web.AppKey("node", interface.Node)
METRICS = web.AppKey("metrics", metrics_mod.Metrics)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "x-request-id"


class ApiError(Exception):
    """An HTTP error with a message that is safe to show to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_JSON = "application/json"


def json_response(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return json_bytes_response(_dumps(value).encode(), status=status, headers=headers)


def json_bytes_response(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Content-Type as a plain header: cheaper than aiohttp's content_type/charset logic,
    # which matters on /status (polled by every control plane and operator).
    all_headers = {"Content-Type": _JSON, **headers} if headers else {"Content-Type": _JSON}
    return web.Response(body=body, status=status, headers=all_headers)


def stream_response(request: web.Request, *, content_type: str) -> web.StreamResponse:
    """A streamed response; it is prepared by the handler, so it carries the request id now."""
    return web.StreamResponse(
        headers={"Content-Type": content_type, REQUEST_ID_HEADER: request[REQUEST_ID]}
    )


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def from_compute_error(e: errors.ComputeError) -> ApiError:
    """Neon's codes: a bad spec is 400, a forbidden status 412, anything else 500."""
    if isinstance(e, errors.ConfigError):
        return ApiError(400, str(e))
    if isinstance(e, errors.StatusError):
        return ApiError(412, str(e))
    return ApiError(500, str(e))


def rfc3339(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def status_body(state: state_mod.ComputeState) -> dict[str, Any]:
    """Neon's ``ComputeStatusResponse`` fields first, then ours (CONTRACTS)."""
    desired = state.desired
    return {
        "start_time": rfc3339(state.start_time),
        "tenant": desired.tenant_id if desired else None,
        "timeline": desired.timeline_id if desired else None,
        "status": state.status.value,
        "last_active": rfc3339(state.last_active),
        "error": state.error,
        "desired_generation": state.desired_generation,
        "applied_generation": state.applied_generation,
        "desired_spec_hash": state.desired_hash,
        "applied_spec_hash": state.applied_hash,
        "pending_restart": list(state.pending_restart),
        "mode": desired.mode.type_name if desired else None,
        "migrations": state.migrations.as_dict() if state.migrations else None,
    }


class StatusCache:
    """The encoded ``/status`` document, re-rendered only when the state it shows changed."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._body = b""

    def body(self, state: state_mod.ComputeState) -> bytes:
        key = (
            state.status,
            state.start_time,
            id(state.desired),
            state.desired_generation,
            state.applied_generation,
            state.desired_hash,
            state.applied_hash,
            state.error,
            state.last_active,
            tuple(state.pending_restart),
            state.migrations,
        )
        if key != self._key:
            self._body = _dumps(status_body(state)).encode()
            self._key = key
        return self._body


STATUS_CACHE = web.AppKey("status_cache", StatusCache)


def status_response(request: web.Request) -> web.Response:
    """The ``/status`` document with its ``ETag`` (the desired spec hash)."""
    state = request.app[NODE].state
    body = request.app[STATUS_CACHE].body(state)
    return json_bytes_response(body, headers={"ETag": f'"{state.desired_hash}"'})


def invalid_status(status: state_mod.ComputeStatus) -> ApiError:
    """Neon's 412 text for an operation the current status does not allow."""
    return ApiError(412, f"invalid compute status: {status.kebab}")


def require_running(state: state_mod.ComputeState) -> None:
    if state.status != state_mod.ComputeStatus.RUNNING:
        raise invalid_status(state.status)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400 that says why not."""
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(400, "request body must be JSON, got an empty body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None


def query_flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter: absent, ``false``/``0`` or ``true``/``1``; else 400."""
    value = request.query.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, f"query parameter {name!r} must be true or false")
