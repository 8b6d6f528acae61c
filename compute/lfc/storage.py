"""The endpoint storage: where a compute's cache state is kept between its lives.

Neon's protocol (``endpoint_storage/src/app.rs``): the object
``http://<endpoint_storage_addr>/<tenant_id>/<timeline_id>/<endpoint_id>/lfc_state`` is
written with ``PUT`` and read with ``GET``, both with ``Authorization: Bearer <token>``
(a JWT whose claims the storage checks). ``target`` resolves the address and the token
from the spec as Neon does; ``download`` and ``upload`` move the bytes. The token never
appears in an error or a log line.
"""

from __future__ import annotations

import dataclasses
import http
import re
import urllib.parse

import aiohttp

from compute_ctl.compute import spec as spec_mod

__all__ = [
    "OBJECT",
    "StorageFailure",
    "Target",
    "check_endpoint_id",
    "download",
    "target",
    "upload",
]

OBJECT = "lfc_state"
_CONNECT_TIMEOUT_S = 10.0
_TRANSFER_TIMEOUT_S = 120.0
_TOTAL_TIMEOUT_S = 900.0  # a whole transfer: a storage trickling bytes must end too
MAX_DOWNLOAD_BYTES = 1 << 30
"""The largest state object read (the controller's bound on the decompressed state)."""
_READ_CHUNK = 1 << 20
_ENDPOINT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")  # admission's id rule


class StorageFailure(Exception):
    """The endpoint storage could not be used (its message is safe to show)."""


@dataclasses.dataclass(frozen=True)
class Target:
    url: str
    token: str = dataclasses.field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def check_endpoint_id(endpoint_id: str) -> None:
    """``from_endpoint`` must be an id as admission allows them (letters, digits, ``_.:-``,
    starting with a letter or digit): ``..`` would climb out of the timeline's directory."""
    if not _ENDPOINT_ID_RE.fullmatch(endpoint_id):
        raise StorageFailure(
            f"{endpoint_id[:40]!r} is not a valid endpoint id (letters, digits and _.:- only, "
            "starting with a letter or digit, at most 128 characters)"
        )


def target(spec: spec_mod.ComputeSpec | None, *, endpoint_id: str | None = None) -> Target:
    """The state object's URL and token; ``endpoint_id`` overrides the spec's (prewarm's
    ``from_endpoint``). Missing pieces are reported in Neon's order and words."""
    if endpoint_id:
        check_endpoint_id(endpoint_id)
    endpoint = endpoint_id or (spec.endpoint_id if spec else None)
    if not endpoint:
        raise StorageFailure("pspec.endpoint_id missing, other endpoint_id not provided")
    addr = None
    if spec is not None:
        addr = spec.endpoint_storage_addr or spec.cluster.setting("neon.endpoint_storage_addr")
    if spec is None or not addr:
        raise StorageFailure("pspec.endpoint_storage_addr missing")
    token = spec.endpoint_storage_token or spec.cluster.setting("neon.endpoint_storage_token")
    if not token:
        raise StorageFailure("pspec.endpoint_storage_token missing")
    # Neon's parsed spec always has both; a vanilla spec may not.
    if not spec.tenant_id:
        raise StorageFailure("pspec.tenant_id missing")
    if not spec.timeline_id:
        raise StorageFailure("pspec.timeline_id missing")
    # The endpoint id may come from a query string: it is one path segment, whatever it is.
    path = "/".join(
        (spec.tenant_id, spec.timeline_id, urllib.parse.quote(endpoint, safe=""), OBJECT)
    )
    return Target(url=f"http://{addr}/{path}", token=token)


def _status(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=_TOTAL_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S, sock_read=_TRANSFER_TIMEOUT_S
    )


async def download(where: Target) -> bytes | None:
    """The stored state, or ``None`` when there is none (404)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=_timeout()) as session,
            session.get(where.url, headers=where.headers) as response,
        ):
            if response.status == 404:
                return None
            if response.status != 200:
                raise StorageFailure(f"{_status(response.status)} querying endpoint storage")
            return await _read_bounded(response)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise StorageFailure(f"querying endpoint storage: {type(e).__name__}: {e}") from e


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    too_large = StorageFailure(f"the stored state is larger than {MAX_DOWNLOAD_BYTES} bytes")
    if (response.content_length or 0) > MAX_DOWNLOAD_BYTES:
        raise too_large
    data = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        data += chunk
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise too_large
    return bytes(data)


async def upload(where: Target, data: bytes) -> None:
    """Store ``data``; anything but exactly 200 is a failure (Neon)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=_timeout()) as session,
            session.put(where.url, headers=where.headers, data=data) as response,
        ):
            if response.status != 200:
                raise StorageFailure(
                    f"request to endpoint storage failed: {_status(response.status)}"
                )
    except (aiohttp.ClientError, TimeoutError) as e:
        raise StorageFailure(f"request to endpoint storage failed: {type(e).__name__}: {e}") from e
