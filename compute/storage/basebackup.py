"""Fetch a basebackup from the pageserver over libpq and unpack it into PGDATA.

Neon's ``get_basebackup`` (libpq flavour): connect to the pageserver of shard 0 with
``application_name=compute_ctl``, ``options=-c neon.compute_mode=<type>`` and the
storage token as the password, then ``COPY OUT`` of
``basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]`` (the LSN is left out
when it is 0, i.e. "latest"; ``--replica`` for every non-primary). The stream goes
straight through ``extract`` into PGDATA. Up to 10 retries, 500 ms apart and growing
by 1.5x, each on a freshly emptied PGDATA (keeping ``postgresql.conf``).

Records ``pageserver_connect_micros``, ``basebackup_ms`` and ``basebackup_bytes``
(compressed). The token never reaches a log line or an error text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
from psycopg import sql

from compute_ctl.compute import errors, pgtools, state
from compute_ctl.compute.storage import extract, libpq

__all__ = ["BASEBACKUP_RETRIES", "Request", "fetch", "fetch_with_retries", "query_text"]

logger = logging.getLogger(__name__)

BASEBACKUP_RETRIES = 10
_FIRST_BACKOFF = 0.5
_BACKOFF_FACTOR = 1.5
_KEEP = frozenset({"postgresql.conf"})


@dataclasses.dataclass(frozen=True)
class Request:
    """What to ask the pageserver for. ``lsn`` ``None`` (or ``0/0``) means the latest."""

    url: str = dataclasses.field(repr=False)
    tenant: str
    timeline: str
    lsn: str | None
    mode_type: str  # primary, replica or static: neon.compute_mode
    token: str | None = dataclasses.field(repr=False)

    @property
    def replica(self) -> bool:
        return self.mode_type != "primary"

    @property
    def at_lsn(self) -> str | None:
        return None if self.lsn in (None, "0/0") else self.lsn


def query_text(request: Request) -> sql.Composed:
    """``basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]``.

    The ids are validated hex and the LSN is ``X/Y`` hex: composed as raw words,
    because the pageserver's command parser splits on spaces and takes no quoting.
    """
    words = [request.tenant, request.timeline]
    if request.at_lsn is not None:
        words.append(request.at_lsn)
    words.append("--gzip")
    if request.replica:
        words.append("--replica")
    return sql.SQL(" ").join([sql.SQL("basebackup"), *(sql.SQL(w) for w in words)])


async def _copy_chunks(copy: psycopg.AsyncCopy) -> AsyncIterator[bytes | bytearray | memoryview]:
    async for chunk in copy:
        yield chunk


async def fetch(
    request: Request,
    *,
    pgdata: Path,
    owner: pgtools.OsUser,
    timings: state.Timings,
) -> None:
    """One attempt: connect, ``COPY OUT``, unpack into ``pgdata``."""
    start = time.monotonic()
    kwargs: dict[str, str] = {
        "application_name": "compute_ctl",
        "options": f"-c neon.compute_mode={request.mode_type}",
    }
    if request.token is not None:
        kwargs["password"] = request.token
    dsn = psycopg.conninfo.make_conninfo(request.url, **kwargs)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    timings.pageserver_connect_micros = int((time.monotonic() - start) * 1_000_000)

    async def stream() -> int:
        cur = conn.cursor()
        async with cur.copy(query_text(request)) as copy:
            return await extract.extract_stream(_copy_chunks(copy), pgdata, owner=owner)

    async with conn:
        # Cancelled mid-stream (a terminate during start): cut, do not wait for psycopg.
        size = await libpq.bounded(conn, stream, timeout=None)
    timings.basebackup_bytes = size
    timings.basebackup_ms = int((time.monotonic() - start) * 1000)
    logger.info(
        "basebackup of %s/%s at %s: %d bytes in %d ms",
        request.tenant,
        request.timeline,
        request.at_lsn or "latest",
        size,
        timings.basebackup_ms,
    )


def _empty(pgdata: Path) -> None:
    """Remove what a failed attempt left, keeping the ``postgresql.conf`` we wrote."""
    for entry in pgdata.iterdir():
        if entry.name in _KEEP:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


async def fetch_with_retries(
    request: Request,
    *,
    pgdata: Path,
    owner: pgtools.OsUser,
    timings: state.Timings,
    retries: int = BASEBACKUP_RETRIES,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """``fetch`` with Neon's retries (10, from 500 ms, x1.5); the last error is raised."""
    delay = _FIRST_BACKOFF
    attempt = 0
    while True:
        try:
            await fetch(request, pgdata=pgdata, owner=owner, timings=timings)
            return
        except (psycopg.Error, OSError, errors.StorageError) as e:
            if attempt >= retries:
                raise errors.StorageError(
                    f"basebackup failed after {attempt + 1} attempts: {_describe(e)}"
                ) from e
            attempt += 1
            logger.warning(
                "basebackup attempt %d failed, retrying in %.2f s: %s",
                attempt,
                delay,
                _describe(e),
            )
            await asyncio.to_thread(_empty, pgdata)
            await sleep(delay)
            delay *= _BACKOFF_FACTOR


def _describe(error: BaseException) -> str:
    """One line; libpq and server messages never carry the password."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
