"""Stream a gzip tar archive into a directory while it is still arriving.

Three stages joined by bounded ``ChunkPipe``s, so the archive is never held in
memory and no CPU work runs on the event loop:

1. the event loop reads the chunks (a basebackup's ``COPY OUT`` data) into pipe 1,
   waiting whenever it is full;
2. an *inflate* thread gunzips pipe 1 into pipe 2 (zlib releases the GIL);
3. an *untar* thread extracts pipe 2 into the directory (file writes release it too),
   so decompression and writing overlap, as ``tar -xzf`` overlaps gzip and tar.

The tar reader runs with ``ignore_zeros``: it reads past the end-of-archive zero
blocks to the very end of the stream, so the producer always drains the stream and
an error sent after the archive (a pageserver failing late) is seen and raised.
Extraction (as root) is path-traversal safe by our own rules (``check_member``), not
by the interpreter's ``tarfile`` filter, which this Python predates bypass fixes of:
absolute names and ``..`` are refused, links only point down the tree (relative targets
without ``..``), and anything but regular files, directories and such links (devices,
fifos) is refused. ``tarfile.data_filter`` runs after as a second layer. Every member,
including parent directories the archive does not list, is owned by the given user.

A failure anywhere stops all three stages; the first real error is the one raised.
Owns the pipes, the gunzip stage and the extraction; knows nothing of libpq.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import tarfile
import threading
import zlib
from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path

from compute_ctl.compute import errors, pgtools

__all__ = [
    "ChunkPipe",
    "PipeClosed",
    "PipeReader",
    "UnsafeMember",
    "check_member",
    "extract_stream",
    "inflate",
]

_TAR_BUFSIZE = 64 * 1024
_COPY_BUFSIZE = 1024 * 1024
_INFLATE_CHUNK = 256 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class PipeClosed(Exception):
    """The other end of a ``ChunkPipe`` went away."""


class ChunkPipe:
    """A bounded pipe of byte chunks: one producer (async or thread), one thread consumer."""

    def __init__(
        self, *, loop: asyncio.AbstractEventLoop | None = None, max_chunks: int = 64
    ) -> None:
        self._loop = loop
        self._max = max_chunks
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._eof = False
        self._error: BaseException | None = None
        self._reader_gone = False
        self._space: asyncio.Future[None] | None = None

    # --- producer ------------------------------------------------------------

    async def put(self, chunk: bytes) -> None:
        """Put from the event loop; waits (without blocking the loop) while full."""
        assert self._loop is not None
        while True:
            with self._cond:
                if self._reader_gone:
                    raise PipeClosed("the archive reader stopped")
                if len(self._chunks) < self._max:
                    self._chunks.append(chunk)
                    self._cond.notify_all()
                    return
                space = self._space = self._loop.create_future()
            await space

    def put_blocking(self, chunk: bytes) -> None:
        """Put from a thread; blocks while full."""
        with self._cond:
            while len(self._chunks) >= self._max and not self._reader_gone:
                self._cond.wait()
            if self._reader_gone:
                raise PipeClosed("the archive reader stopped")
            self._chunks.append(chunk)
            self._cond.notify_all()

    def close(self) -> None:
        """End of stream: the reader sees EOF after the buffered chunks."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self, error: BaseException | None = None) -> None:
        """The producer failed: the reader raises ``error`` (or ``PipeClosed``) next."""
        with self._cond:
            self._error = error or PipeClosed("the archive stream was aborted")
            self._cond.notify_all()

    # --- consumer (a thread) -------------------------------------------------

    def get(self) -> bytes:
        """The next chunk, or ``b""`` at the end of the stream."""
        with self._cond:
            while not self._chunks and not self._eof and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            self._cond.notify_all()
            space, self._space = self._space, None
        if space is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, space)
        return chunk

    def reader_done(self) -> None:
        """The reader stopped (finished or failed): fail any waiting producer."""
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            self._cond.notify_all()
            space, self._space = self._space, None
        if space is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, space)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def inflate(src: ChunkPipe, dst: ChunkPipe) -> None:
    """Gunzip ``src`` into ``dst`` (blocking: the inflate thread).

    Concatenated gzip members are read in turn. A truncated or corrupt stream aborts
    ``dst`` with a ``StorageError``.
    """
    z = zlib.decompressobj(_GZIP_WBITS)
    try:
        while True:
            if z.unconsumed_tail:
                data = z.unconsumed_tail
            elif z.eof:
                data = z.unused_data or src.get()
                if not data:
                    break
                z = zlib.decompressobj(_GZIP_WBITS)
            else:
                data = src.get()
                if not data:
                    raise errors.StorageError("basebackup archive is truncated (gzip stream)")
            try:
                out = z.decompress(data, _INFLATE_CHUNK)
            except zlib.error as e:
                raise errors.StorageError(f"basebackup archive is not valid gzip: {e}") from e
            if out:
                dst.put_blocking(out)
    except PipeClosed:
        dst.abort()  # one side is gone; the other learns it
        raise
    except BaseException as e:
        dst.abort(e)
        raise
    else:
        dst.close()
    finally:
        src.reader_done()


class PipeReader:
    """A read-only file object over a ``ChunkPipe``; ``read(n)`` returns at most n bytes.

    tarfile's stream mode keeps and re-slices whatever a read returns, so handing it
    small pieces keeps its buffer (and its copying) small.
    """

    def __init__(self, pipe: ChunkPipe) -> None:
        self._pipe = pipe
        self._chunk = memoryview(b"")
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if not self._chunk:
            self._chunk = memoryview(self._pipe.get())
            if not self._chunk:
                return b""
        n = len(self._chunk) if size < 0 else min(size, len(self._chunk))
        out = self._chunk[:n].tobytes()
        self._chunk = self._chunk[n:]
        self._pos += n
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a basebackup stream cannot seek")

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("a basebackup stream is read-only")

    def close(self) -> None:
        pass


class UnsafeMember(errors.StorageError):
    """An archive member that could write outside PGDATA or create something odd."""


def _rel_parts(name: str, *, what: str) -> list[str]:
    """The components of a relative, descending path; ``UnsafeMember`` otherwise."""
    if not name or name.startswith("/") or "\0" in name:
        raise UnsafeMember(f"{what} {name!r} is absolute or empty")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(f"{what} {name!r} contains '..'")
    return parts


def check_member(member: tarfile.TarInfo) -> str:
    """Our own rules for one member, whatever this Python's ``tarfile`` filters do: a
    relative name without ``..``; a regular file, a directory, or a link whose target is
    relative and without ``..`` (so, by induction, every link resolves inside the
    directory); nothing else (devices, fifos, ...). Returns the normalised name."""
    parts = _rel_parts(member.name, what="member")
    if not parts:
        if member.isdir():
            return "."
        raise UnsafeMember(f"member {member.name!r} has no name")
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        if not _rel_parts(member.linkname, what=f"{kind} {member.name!r} -> target"):
            raise UnsafeMember(f"{kind} {member.name!r} points at its own directory")
    elif not (member.isreg() or member.isdir()):
        raise UnsafeMember(f"member {member.name!r} is not a file, directory or link")
    return "/".join(parts)


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
                if user.uid is not None and user.gid is not None:
                    os.chown(path, user.uid, user.gid, follow_symlinks=False)

    def member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        name = check_member(member)
        # Python's data filter as a second, version-dependent layer (strips modes too).
        safe = tarfile.data_filter(member.replace(name=name, deep=False), dest)
        make_parents(dest, safe.name)
        if user.uid is None or user.gid is None:
            return safe
        # numeric_owner: the archive's user names mean nothing here.
        return safe.replace(uid=user.uid, gid=user.gid, uname="", gname="", deep=False)

    return member_filter


def untar(pipe: ChunkPipe, dest: Path, *, owner: pgtools.OsUser) -> None:
    """Extract the tar stream in ``pipe`` into ``dest`` (blocking: the untar thread)."""
    try:
        with tarfile.open(
            fileobj=PipeReader(pipe),
            mode="r|",
            bufsize=_TAR_BUFSIZE,
            ignore_zeros=True,
        ) as tar:
            tar.copybufsize = _COPY_BUFSIZE  # type: ignore[attr-defined]  # missing in typeshed
            # S202: the data filter is what makes this safe (see the module docstring).
            tar.extractall(  # noqa: S202
                os.fspath(dest), filter=_owned_by(owner), numeric_owner=True
            )
    except UnsafeMember as e:
        raise UnsafeMember(f"unsafe member in basebackup archive: {e}") from None
    except tarfile.FilterError as e:
        raise UnsafeMember(f"unsafe member in basebackup archive: {e}") from e
    except tarfile.TarError as e:
        raise errors.StorageError(f"bad basebackup archive: {e}") from e
    finally:
        pipe.reader_done()


def _first_error(results: Sequence[BaseException | None]) -> BaseException | None:
    """The error that explains a failure: anything but a ``PipeClosed`` echo."""
    real = [r for r in results if isinstance(r, BaseException) and not isinstance(r, PipeClosed)]
    return real[0] if real else None


async def extract_stream(
    chunks: AsyncIterable[bytes | bytearray | memoryview],
    dest: Path,
    *,
    owner: pgtools.OsUser,
    max_chunks: int = 64,
) -> int:
    """Gunzip and untar ``chunks`` into ``dest`` as they arrive; return the compressed size.

    Errors of the stream (including one raised after the archive's end) and of the
    extraction are raised here; on any failure or cancellation the workers stop.
    """
    compressed = ChunkPipe(loop=asyncio.get_running_loop(), max_chunks=max_chunks)
    tar_stream = ChunkPipe(max_chunks=8)
    workers = asyncio.gather(
        asyncio.to_thread(untar, tar_stream, dest, owner=owner),
        asyncio.to_thread(inflate, compressed, tar_stream),
        return_exceptions=True,
    )
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            await compressed.put(bytes(chunk))
    except PipeClosed:
        error = _first_error(await workers)
        if error is not None:
            raise error from None
        raise errors.StorageError("basebackup archive ended before its stream") from None
    except BaseException:
        compressed.abort()
        await asyncio.shield(workers)
        raise
    compressed.close()
    error = _first_error(await workers)
    if error is not None:
        raise error
    return total
