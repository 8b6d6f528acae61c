"""A minimal PostgreSQL wire-protocol server for test doubles (asyncio streams).

Speaks what libpq needs to talk to Neon's storage services: refuses SSL/GSS
encryption, reads the startup message, asks for the password (cleartext, as Neon's
pageserver and safekeepers do, or md5), then answers simple ``Query`` messages via
``handle_query``. Subclasses implement ``handle_query``; everything is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import struct
from collections.abc import Sequence
from typing import Literal, Self

__all__ = ["Session", "WireServer", "message"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_PROTOCOL_3 = 196608
_TEXT_OID = 25


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


class Session:
    """One client connection: its startup parameters and a writer of messages."""

    def __init__(self, writer: asyncio.StreamWriter, params: dict[str, str]) -> None:
        self.writer = writer
        self.params = params

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.writer.write(message(kind, payload))

    def row_description(self, names: list[str]) -> None:
        fields = b"".join(
            _cstr(n) + struct.pack("!ihihih", 0, 0, _TEXT_OID, -1, -1, 0) for n in names
        )
        self.send(b"T", struct.pack("!h", len(names)) + fields)

    def data_row(self, values: Sequence[str | None]) -> None:
        """One row; ``None`` is SQL NULL."""
        cols = b"".join(
            struct.pack("!i", -1) if v is None else struct.pack("!i", len(v.encode())) + v.encode()
            for v in values
        )
        self.send(b"D", struct.pack("!h", len(values)) + cols)

    def command_complete(self, tag: str) -> None:
        self.send(b"C", _cstr(tag))

    def error(self, text: str, *, code: str = "XX000") -> None:
        fields = b"S" + _cstr("ERROR") + b"V" + _cstr("ERROR") + b"C" + _cstr(code)
        self.send(b"E", fields + b"M" + _cstr(text) + b"\0")

    def ready(self) -> None:
        self.send(b"Z", b"I")

    async def drain(self) -> None:
        await self.writer.drain()


class WireServer:
    """Listen on loopback; authenticate with ``token``; dispatch queries."""

    def __init__(
        self,
        *,
        token: str | None,
        auth: Literal["cleartext", "md5"] = "cleartext",
    ) -> None:
        self.token = token
        self.auth = auth
        self.startups: list[dict[str, str]] = []
        self.queries: list[str] = []
        self.auth_failures = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle_query(self, session: Session, query: str) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            params = await self._startup(reader, writer)
            if params is None:
                return
            session = Session(writer, params)
            while True:
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                if kind == b"X":
                    return
                if kind != b"Q":
                    session.error(f"unsupported message {kind!r}", code="08P01")
                    session.ready()
                    await session.drain()
                    continue
                query = body.rstrip(b"\0").decode()
                self.queries.append(query)
                await self.handle_query(session, query)
                session.ready()
                await session.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Only __aexit__ cancels handlers; asyncio's streams would log a re-raise.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, str] | None:
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            if code != _PROTOCOL_3:
                return None
            parts = body[4:].split(b"\0")
            params = {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 2, 2)}
            break
        self.startups.append(params)
        session = Session(writer, params)
        if self.token is not None and not await self._authenticate(reader, session, params):
            self.auth_failures += 1
            session.error("password authentication failed", code="28P01")
            await session.drain()
            return None
        session.send(b"R", struct.pack("!i", 0))
        for name, value in (("server_version", "15.0"), ("client_encoding", "UTF8")):
            session.send(b"S", _cstr(name) + _cstr(value))
        session.send(b"K", struct.pack("!ii", 4242, 1))
        session.ready()
        await session.drain()
        return params

    async def _authenticate(
        self, reader: asyncio.StreamReader, session: Session, params: dict[str, str]
    ) -> bool:
        assert self.token is not None
        salt = secrets.token_bytes(4)
        if self.auth == "md5":
            session.send(b"R", struct.pack("!i", 5) + salt)
        else:
            session.send(b"R", struct.pack("!i", 3))
        await session.drain()
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        body = (await reader.readexactly(length - 4)).rstrip(b"\0")
        if kind != b"p":
            return False
        if self.auth == "md5":
            user = params.get("user", "")
            inner = hashlib.md5((self.token + user).encode()).hexdigest()  # noqa: S324
            expected = "md5" + hashlib.md5(inner.encode() + salt).hexdigest()  # noqa: S324
            return body.decode() == expected
        return body.decode() == self.token
