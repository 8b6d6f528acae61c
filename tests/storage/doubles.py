"""Test doubles of Neon's storage services: a safekeeper and a pageserver.

Both are ``wire.WireServer``s on loopback that check the storage token. The
safekeeper answers ``TIMELINE_STATUS`` with one row of ``flush_lsn`` and
``commit_lsn`` (no row when it does not know the timeline), as Neon's safekeeper
does. The pageserver answers ``basebackup <tenant> <timeline> [<lsn>] --gzip
[--replica]`` with a ``CopyOutResponse`` stream of a gzip tar; optionally it fails
the first attempts, or sends an ``ErrorResponse`` after the whole archive (the case
the tar reader must drain the stream for). It also answers Neon's ``lease lsn
<tenant_shard_id> <timeline> <lsn> `` with a ``valid_until`` row, following a script of
``Lease`` answers (granted for some seconds, refused with NULL, or an error), and records
each call with its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from tests.storage import wire

__all__ = ["Lease", "LeaseCall", "TestPageserver", "TestSafekeeper", "storage_services"]


class TestSafekeeper(wire.WireServer):
    __test__ = False  # not a pytest class

    def __init__(
        self,
        *,
        token: str | None,
        flush_lsn: str = "0/169AD58",
        commit_lsn: str = "0/169AD58",
        knows_timeline: bool = True,
        delay: float = 0.0,
        auth: Literal["cleartext", "md5"] = "cleartext",
    ) -> None:
        super().__init__(token=token, auth=auth)
        self.flush_lsn = flush_lsn
        self.commit_lsn = commit_lsn
        self.knows_timeline = knows_timeline
        self.delay = delay

    async def handle_query(self, session: wire.Session, query: str) -> None:
        if query.strip() != "TIMELINE_STATUS":
            session.error(f"unsupported safekeeper command {query!r}")
            return
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow safekeeper, not synchronisation
        session.row_description(["flush_lsn", "commit_lsn"])
        if self.knows_timeline:
            session.data_row([self.flush_lsn, self.commit_lsn])
        session.command_complete("TIMELINE_STATUS")


@dataclasses.dataclass(frozen=True)
class BasebackupCall:
    tenant: str
    timeline: str
    lsn: str | None
    gzip: bool
    replica: bool
    options: str
    application_name: str


@dataclasses.dataclass(frozen=True)
class Lease:
    """One scripted answer to ``lease lsn``: granted for ``valid_for`` seconds from now,
    refused (``valid_for`` None: a NULL ``valid_until``), or an ``error``."""

    valid_for: float | None = 600.0
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class LeaseCall:
    query: str
    tenant_shard_id: str
    timeline: str
    lsn: str
    at: float  # time.monotonic() when it arrived


class TestPageserver(wire.WireServer):
    __test__ = False

    def __init__(
        self,
        *,
        token: str | None,
        archive: bytes = b"",
        leases: list[Lease] | None = None,
        lease_default: Lease = Lease(),
        chunk_size: int = 16 * 1024,
        fail_first: int = 0,
        error_after_archive: bool = False,
        auth: Literal["cleartext", "md5"] = "cleartext",
    ) -> None:
        super().__init__(token=token, auth=auth)
        self.archive = archive
        self.chunk_size = chunk_size
        self.fail_first = fail_first
        self.error_after_archive = error_after_archive
        self.calls: list[BasebackupCall] = []
        self.leases = list(leases or [])  # answered in order, then ``lease_default``
        self.lease_default = lease_default
        self.lease_calls: list[LeaseCall] = []

    @property
    def url(self) -> str:
        return f"postgresql://no_user@127.0.0.1:{self.port}"

    async def handle_query(self, session: wire.Session, query: str) -> None:
        words = query.split()
        if words[:2] == ["lease", "lsn"]:
            self._lease(session, query, words)
            return
        if len(words) < 3 or words[0] != "basebackup":
            session.error(f"unsupported pageserver command {query!r}")
            return
        flags = [w for w in words[3:] if w.startswith("--")]
        rest = [w for w in words[3:] if not w.startswith("--")]
        self.calls.append(
            BasebackupCall(
                tenant=words[1],
                timeline=words[2],
                lsn=rest[0] if rest else None,
                gzip="--gzip" in flags,
                replica="--replica" in flags,
                options=session.params.get("options", ""),
                application_name=session.params.get("application_name", ""),
            )
        )
        if len(self.calls) <= self.fail_first:
            session.error("tenant is still loading", code="XX000")
            return
        session.send(b"H", b"\0\0\0")  # CopyOutResponse: text format, no columns
        for offset in range(0, len(self.archive), self.chunk_size):
            session.send(b"d", self.archive[offset : offset + self.chunk_size])
            await session.drain()
        if self.error_after_archive:
            session.error("could not finish basebackup: timeline deleted")
            return
        session.send(b"c")
        session.command_complete("COPY")

    def _lease(self, session: wire.Session, query: str, words: list[str]) -> None:
        if len(words) != 5:
            session.error(f"invalid lease command {query!r}")
            return
        self.lease_calls.append(
            LeaseCall(
                query=query,
                tenant_shard_id=words[2],
                timeline=words[3],
                lsn=words[4],
                at=time.monotonic(),
            )
        )
        answer = self.leases.pop(0) if self.leases else self.lease_default
        if answer.error is not None:
            session.error(answer.error)
            return
        session.row_description(["valid_until"])
        if answer.valid_for is None:
            session.data_row([None])
        else:
            session.data_row([str(int((time.time() + answer.valid_for) * 1000))])
        session.command_complete("SELECT 1")


@contextlib.asynccontextmanager
async def storage_services(
    archive: bytes,
    *,
    token: str,
    safekeepers: int = 3,
    sk_kwargs: dict[str, Any] | None = None,
    **ps_kwargs: Any,
) -> AsyncIterator[tuple[TestPageserver, list[TestSafekeeper]]]:
    """A pageserver serving ``archive`` and ``safekeepers`` safekeepers, all up in the block."""
    ps = TestPageserver(token=token, archive=archive, **ps_kwargs)
    sks = [TestSafekeeper(token=token, **(sk_kwargs or {})) for _ in range(safekeepers)]
    async with contextlib.AsyncExitStack() as stack:
        for server in (ps, *sks):
            await stack.enter_async_context(server)
        yield ps, sks
