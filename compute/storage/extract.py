"""Stream a gzip tar archive into a directory while it is still arriving.

The event loop reads the chunks (a basebackup's ``COPY OUT`` data) and puts them in a
bounded ``ChunkPipe``; one worker thread gunzips and untars from it, so the CPU work
never runs on the loop and the archive is never held in memory (at most
``max_chunks`` chunks are buffered; the producer waits when the pipe is full).

The tar reader runs with ``ignore_zeros``: it reads past the end-of-archive zero
blocks to the very end of the stream, so the producer always drains the stream and
an error sent after the archive (a pageserver failing late) is seen and raised.
Extraction is path-traversal safe (``tarfile.data_filter``: no absolute paths, no
``..``, no links leaving the directory, no devices) and every member is owned by the
given user.

Owns the pipe, the gunzip reader and the extraction; knows nothing of libpq.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import tarfile
import threading
import zlib
from collections.abc import AsyncIterable, Callable
from pathlib import Path

from compute_ctl.compute import errors, pgtools

__all__ = ["ChunkPipe", "GunzipReader", "PipeClosed", "extract_stream"]

# tarfile's stream mode copies its read buffer on every header read: keep it modest.
_TAR_BUFSIZE = 64 * 1024
_COPY_BUFSIZE = 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class PipeClosed(Exception):
    """The other end of a ``ChunkPipe`` went away."""


class ChunkPipe:
    """A bounded pipe of byte chunks: one async producer, one thread consumer."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, max_chunks: int = 64) -> None:
        self._loop = loop
        self._max = max_chunks
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._eof = False
        self._aborted = False
        self._reader_gone = False
        self._space: asyncio.Future[None] | None = None

    # --- producer (event loop) ---------------------------------------------

    async def put(self, chunk: bytes) -> None:
        while True:
            with self._cond:
                if self._reader_gone:
                    raise PipeClosed("the archive reader stopped")
                if len(self._chunks) < self._max:
                    self._chunks.append(chunk)
                    self._cond.notify()
                    return
                space = self._space = self._loop.create_future()
            await space

    def close(self) -> None:
        """End of stream: the reader sees EOF after the buffered chunks."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self) -> None:
        """The producer failed: the reader raises ``PipeClosed`` at its next read."""
        with self._cond:
            self._aborted = True
            self._cond.notify()

    # --- consumer (worker thread) ------------------------------------------

    def get(self) -> bytes:
        """The next chunk, or ``b""`` at the end of the stream."""
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise PipeClosed("the archive stream was aborted")
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            space, self._space = self._space, None
        if space is not None:
            self._loop.call_soon_threadsafe(_resolve, space)
        return chunk

    def reader_done(self) -> None:
        """The reader stopped (finished or failed): wake and fail a waiting producer."""
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            space, self._space = self._space, None
        if space is not None:
            self._loop.call_soon_threadsafe(_resolve, space)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GunzipReader:
    """A read-only file object that gunzips the chunks of a ``ChunkPipe``."""

    def __init__(self, pipe: ChunkPipe) -> None:
        self._pipe = pipe
        self._z = zlib.decompressobj(_GZIP_WBITS)
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a basebackup stream cannot seek")

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("a basebackup stream is read-only")

    def close(self) -> None:
        pass

    def read(self, size: int = -1) -> bytes:
        limit = size if size > 0 else _COPY_BUFSIZE
        while True:
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            elif self._z.eof:
                # A concatenated gzip member may follow; nothing at all is the end.
                data = self._z.unused_data or self._pipe.get()
                if not data:
                    return b""
                self._z = zlib.decompressobj(_GZIP_WBITS)
            else:
                data = self._pipe.get()
                if not data:
                    raise errors.StorageError("basebackup archive is truncated (gzip stream)")
            try:
                out = self._z.decompress(data, limit)
            except zlib.error as e:
                raise errors.StorageError(f"basebackup archive is not valid gzip: {e}") from e
            if out:
                self._pos += len(out)
                return out


def _owned_by(user: pgtools.OsUser) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo]:
    made: set[str] = set()

    def make_parents(dest: str, name: str) -> None:
        # tarfile creates missing parents as the caller (root); postgres must own them.
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            if rel in made:
                continue
            made.add(rel)
            path = os.path.join(dest, rel)
            if not os.path.lexists(path):
                os.mkdir(path, 0o700)
                user.chown(Path(path))

    def member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        safe = tarfile.data_filter(member, dest)
        make_parents(dest, safe.name)
        if user.uid is None or user.gid is None:
            return safe
        # numeric_owner: the archive's user names mean nothing here.
        return safe.replace(uid=user.uid, gid=user.gid, uname="", gname="", deep=False)

    return member_filter


def extract_tar(reader: GunzipReader, dest: Path, *, owner: pgtools.OsUser) -> None:
    """Untar everything ``reader`` yields into ``dest`` (blocking: a worker thread)."""
    try:
        with tarfile.open(
            fileobj=reader,
            mode="r|",
            bufsize=_TAR_BUFSIZE,
            ignore_zeros=True,
        ) as tar:
            tar.copybufsize = _COPY_BUFSIZE  # type: ignore[attr-defined]  # missing in typeshed
            # S202: the data filter is what makes this safe (see the module docstring).
            tar.extractall(  # noqa: S202
                os.fspath(dest), filter=_owned_by(owner), numeric_owner=True
            )
    except tarfile.FilterError as e:
        raise errors.StorageError(f"unsafe member in basebackup archive: {e}") from e
    except tarfile.TarError as e:
        raise errors.StorageError(f"bad basebackup archive: {e}") from e


async def extract_stream(
    chunks: AsyncIterable[bytes | bytearray | memoryview],
    dest: Path,
    *,
    owner: pgtools.OsUser,
    max_chunks: int = 64,
) -> int:
    """Gunzip and untar ``chunks`` into ``dest`` as they arrive; return the compressed size.

    Errors of the stream (including one raised after the archive's end) and of the
    extraction are raised here; on any failure or cancellation the worker stops.
    """
    pipe = ChunkPipe(loop=asyncio.get_running_loop(), max_chunks=max_chunks)

    def work() -> None:
        try:
            extract_tar(GunzipReader(pipe), dest, owner=owner)
        finally:
            pipe.reader_done()

    worker = asyncio.ensure_future(asyncio.to_thread(work))
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            await pipe.put(bytes(chunk))
    except PipeClosed:
        await worker  # the reader failed: its error is the one to raise
        raise errors.StorageError("basebackup archive ended before the stream") from None
    except BaseException:
        pipe.abort()
        await asyncio.gather(worker, return_exceptions=True)
        raise
    pipe.close()
    await worker
    return total
