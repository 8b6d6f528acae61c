"""Shared response shapes of the HTTP API: JSON bodies, errors, the status document.

Owns ``ApiError`` (the HTTP layer's own refusals, rendered by ``translate`` as
``{"error": "..."}``), the ``/status`` body (rendered with ``api_models``), the app keys
and the small parsing helpers every route uses (JSON body, boolean query flags). It
never talks to PostgreSQL.
"""

from __future__ import annotations

import datetime
import json
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import multidict
import pydantic
from aiohttp import web

from compute_ctl.compute import api_models, logformat
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import interface

__all__ = [
    "METRICS",
    "NODE",
    "REQUEST_ID_HEADER",
    "STATUS_CACHE",
    "ApiError",
    "StatusCache",
    "error",
    "json_bytes_response",
    "json_response",
    "model_response",
    "node_scoped",
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
# An ``istr``: multidict looks it up without case-folding it on every request.
REQUEST_ID_HEADER = multidict.istr("x-request-id")


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


def model_response(
    body: pydantic.BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A wire model (``api_models``) as the JSON body."""
    return json_bytes_response(
        body.model_dump_json(by_alias=True).encode(), status=status, headers=headers
    )


def stream_response(*, content_type: str) -> web.StreamResponse:
    """A streamed response; it is prepared by the handler, so it carries the request id now:
    the one ``app`` put in ``logformat.REQUEST_ID`` for the task serving this request."""
    headers = {"Content-Type": content_type}
    request_id = logformat.REQUEST_ID.get()
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return web.StreamResponse(headers=headers)


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return model_response(api_models.ErrorBody(error=message), status=status, headers=headers)


_T = TypeVar("_T")
_NODE_SCOPED: weakref.WeakKeyDictionary[object, dict[type, object]] = weakref.WeakKeyDictionary()


def node_scoped(node: interface.Node, kind: type[_T], factory: Callable[[], _T]) -> _T:
    """The one ``kind`` object of ``node``, made by ``factory`` on first use.

    Both apps (external and internal) serve one node, so per-node resources (the readiness
    session, the pg_dump slots) are kept here rather than in an app; they go with the node.
    """
    per_node = _NODE_SCOPED.setdefault(node, {})
    found = per_node.get(kind)
    if not isinstance(found, kind):
        found = factory()
        per_node[kind] = found
    return found


def rfc3339(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def status_body(state: state_mod.ComputeState) -> api_models.ComputeStatusResponse:
    """Neon's ``ComputeStatusResponse`` fields first, then ours (``api_models``)."""
    desired = state.desired
    return api_models.ComputeStatusResponse(
        start_time=rfc3339(state.start_time),
        tenant=desired.tenant_id if desired else None,
        timeline=desired.timeline_id if desired else None,
        status=state.status,
        last_active=rfc3339(state.last_active),
        error=state.error,
        desired_generation=state.desired_generation,
        applied_generation=state.applied_generation,
        desired_spec_hash=state.desired_hash,
        applied_spec_hash=state.applied_hash,
        pending_restart=list(state.pending_restart),
        mode=desired.mode.type_name if desired else None,
        pending_error=state.pending_error,
        migrations=(
            api_models.MigrationsStatus(**state.migrations.as_dict()) if state.migrations else None
        ),
    )


class StatusCache:
    """The encoded ``/status`` document of one node and its response headers (``ETag``: the
    desired spec hash, quoted), re-rendered only when the state they show changed."""

    def __init__(self, node: interface.Node) -> None:
        self._node = node
        self._key: tuple[object, ...] | None = None
        self._body = b""
        self._headers: multidict.CIMultiDictProxy[str] = multidict.CIMultiDictProxy(
            multidict.CIMultiDict()
        )

    def current(self) -> tuple[bytes, multidict.CIMultiDictProxy[str]]:
        """(body, headers): ``Content-Type`` and ``ETag``, built once per state, since
        ``web.Response`` copies a ready ``CIMultiDict`` faster than it builds one."""
        state = self._node.state
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
            state.pending_error,
            state.migrations,
        )
        if key != self._key:
            self._body = status_body(state).model_dump_json().encode()
            self._headers = multidict.CIMultiDictProxy(
                multidict.CIMultiDict({"Content-Type": _JSON, "ETag": f'"{state.desired_hash}"'})
            )
            self._key = key
        return self._body, self._headers


STATUS_CACHE = web.AppKey("status_cache", StatusCache)


def status_response(request: web.Request) -> web.Response:
    """The ``/status`` document with its ``ETag`` (the desired spec hash)."""
    body, headers = request.app[STATUS_CACHE].current()
    return web.Response(body=body, headers=headers)


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
