"""The one place where failures become HTTP answers (httpx's ``map_httpcore_exceptions``).

Handlers raise; they never choose a code for a foreign error. ``status_and_message`` maps:

- ``responses.ApiError``: its own code (the HTTP layer's refusals: bad JSON, a query
  parameter, auth);
- aiohttp's ``HTTPException`` (4xx): its code and reason;
- the compute's errors (``compute.errors``): ``InputError`` (``ConfigError``, admission's
  error) 400, ``NotFound`` 404, ``StatusError`` 412, ``Busy`` 503, any other
  ``ComputeError`` 500 (Neon's codes);
- ``psycopg.Error`` by SQLSTATE: an object that does not exist 404, a value PostgreSQL
  rejects 400, too many connections 503, anything else 500;
- anything else: 500 ``internal server error``, logged as a bug with its traceback.

Messages are the errors' own, which never carry a secret; PostgreSQL's are reduced to
their primary message (never the statement).
"""

from __future__ import annotations

import logging

import psycopg
from aiohttp import web

from compute_ctl.compute import errors
from compute_ctl.compute.http import responses

__all__ = ["error_response", "status_and_message"]

logger = logging.getLogger(__name__)

# SQLSTATEs of "no such object": 3D000 database, 3F000 schema, 42704 role/object,
# 42P01 table, 42883 function. Class 22 (data exceptions) and 0A (not supported) are
# values the client chose; 58P01 is a missing extension control file.
_NOT_FOUND = frozenset({"3D000", "3F000", "42704", "42P01", "42883", "58P01"})
_BAD_REQUEST_CLASSES = ("22", "0A", "0L", "42")
# too_many_connections, cannot_connect_now (starting up or shutting down).
_UNAVAILABLE = frozenset({"53300", "57P03"})


def _compute_code(e: errors.ComputeError) -> int:
    if isinstance(e, errors.NotFound):
        return 404
    if isinstance(e, errors.InputError):
        return 400
    if isinstance(e, errors.StatusError):
        return 412
    if isinstance(e, errors.Busy):
        return 503
    return 500


def _postgres_code(e: psycopg.Error) -> int:
    sqlstate = e.sqlstate or ""
    if sqlstate in _NOT_FOUND:
        return 404
    if sqlstate in _UNAVAILABLE:
        return 503
    if sqlstate.startswith(_BAD_REQUEST_CLASSES):
        return 400
    return 500


def status_and_message(e: BaseException) -> tuple[int, str] | None:
    """The code and client-safe message for ``e``; ``None`` for a bug (unexpected error)."""
    if isinstance(e, responses.ApiError):
        return e.status, e.message
    if isinstance(e, web.HTTPException) and e.status >= 400:
        return e.status, e.reason
    if isinstance(e, errors.ComputeError):
        return _compute_code(e), str(e)
    if isinstance(e, psycopg.Error):
        detail = e.diag.message_primary or type(e).__name__
        return _postgres_code(e), f"postgres: {detail}"
    return None


def error_response(request: web.Request, e: Exception, request_id: str) -> web.Response:
    """``{"error": ...}`` with the code of ``e`` (and ``Allow`` for a 405)."""
    translated = status_and_message(e)
    if translated is None:
        logger.error(
            "unhandled error in %s %s (request %s)",
            request.method,
            request.path,
            request_id,
            exc_info=e,
        )
        return responses.error(500, "internal server error")
    status, message = translated
    headers = None
    if isinstance(e, web.HTTPException) and "Allow" in e.headers:
        headers = {"Allow": e.headers["Allow"]}
    return responses.error(status, message, headers=headers)
