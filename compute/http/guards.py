"""Requests a browser could forge: refused before any route runs (``checker``).

A web page open in a browser on the same machine can send "simple" cross-site requests to
loopback ports (form and ``text/plain`` bodies need no CORS preflight), and DNS
rebinding lets it do so under a foreign host name. The API is for programs, never for
pages, so:

- a body must be JSON (``Content-Type: application/json``; 415 otherwise, as Neon's axum
  extractor answers);
- a request a browser marks as coming from another page (``Sec-Fetch-Site`` other than
  ``same-origin`` or ``none``), or with an ``Origin`` that is not this server's own, is
  refused (403). Programs send neither header;
- on the internal port, ``Host`` must name this loopback server (``127.0.0.1``,
  ``localhost`` or ``[::1]`` with its port), which defeats DNS rebinding. The external
  port is reached under names we cannot know (Service, pod IP), so it is not checked;
  its JWT is the guard there.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import hdrs, web
from multidict import istr

from compute_ctl.compute.http import responses

__all__ = ["checker"]

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})
# ``istr`` names: multidict looks them up without case-folding them on every request.
_SEC_FETCH_SITE = istr("Sec-Fetch-Site")


def checker(*, internal_port: int | None) -> Callable[[web.Request], None]:
    """The check of one server: it raises ``ApiError`` for a cross-site or non-JSON request.

    ``internal_port``: the internal server's port (``Host`` is checked against it); ``None``
    on the external server. Built once per server: it runs before every request.
    """
    own_hosts = (
        frozenset(f"{name}:{internal_port}" for name in _LOOPBACK_NAMES)
        if internal_port is not None
        else None
    )

    def check(request: web.Request) -> None:
        headers = request.headers
        host = headers.get(hdrs.HOST)
        if own_hosts is not None and host is not None and host.lower() not in own_hosts:
            raise responses.ApiError(403, "requests must name this loopback server in Host")
        fetch_site = headers.get(_SEC_FETCH_SITE)
        if fetch_site is not None and fetch_site.lower() not in _OWN_FETCH_SITES:
            raise responses.ApiError(403, "cross-site requests are not allowed")
        origin = headers.get(hdrs.ORIGIN)
        if origin is not None and (host is None or origin.lower() != f"http://{host.lower()}"):
            raise responses.ApiError(403, "cross-origin requests are not allowed")
        if request.body_exists and request.content_type != "application/json":
            raise responses.ApiError(415, "Expected request with `Content-Type: application/json`")

    return check
