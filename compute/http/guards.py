"""Requests a browser could forge: refused before any route runs (``check``).

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

from aiohttp import web

from compute_ctl.compute.http import responses

__all__ = ["check"]

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def _own_hosts(port: int) -> frozenset[str]:
    return frozenset(f"{name}:{port}" for name in _LOOPBACK_NAMES)


def check(request: web.Request, *, internal_port: int | None) -> None:
    """Raise ``ApiError`` for a cross-site or non-JSON request.

    ``internal_port``: the internal server's port (``Host`` is checked against it); ``None``
    on the external server.
    """
    host = request.headers.get("Host")
    own = internal_port is None or host is None or host.lower() in _own_hosts(internal_port)
    if not own:
        raise responses.ApiError(403, "requests must name this loopback server in Host")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in _OWN_FETCH_SITES:
        raise responses.ApiError(403, "cross-site requests are not allowed")
    origin = request.headers.get("Origin")
    if origin is not None and (host is None or origin.lower() != f"http://{host.lower()}"):
        raise responses.ApiError(403, "cross-origin requests are not allowed")
    if request.body_exists and request.content_type != "application/json":
        raise responses.ApiError(415, "Expected request with `Content-Type: application/json`")
