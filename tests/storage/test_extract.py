"""Streaming gunzip+untar: safe, owned by the OS user, errors after the archive seen."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import shutil
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from compute_ctl.compute import errors
from compute_ctl.compute.storage import extract
from tests import pgserver
from tests.storage import archive


@pytest.fixture
def dest() -> Iterator[Path]:
    base = pgserver.scratch_dir("extract-")
    path = base / "data"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def chunks(
    data: bytes, *, size: int = 1000, then: Exception | None = None
) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]
    if then is not None:
        raise then


async def test_members_are_extracted_and_owned_by_the_os_user(dest: Path) -> None:
    data = archive.gzip_tar({"global/pg_control": b"x" * 8192, "PG_VERSION": b"15\n"})
    user = pgserver.tools().user
    size = await extract.extract_stream(chunks(data), dest, owner=user)
    assert size == len(data)
    assert (dest / "PG_VERSION").read_bytes() == b"15\n"
    assert (dest / "global/pg_control").stat().st_size == 8192
    if user.uid is not None:
        assert (dest / "global/pg_control").stat().st_uid == user.uid
        assert (dest / "global").stat().st_uid == user.uid


async def test_an_error_after_the_archive_end_is_raised(dest: Path) -> None:
    data = archive.gzip_tar({"PG_VERSION": b"15\n"})
    with pytest.raises(RuntimeError, match="late failure"):
        await extract.extract_stream(
            chunks(data, then=RuntimeError("late failure")), dest, owner=pgserver.tools().user
        )


async def test_trailing_zero_blocks_are_read_through(dest: Path) -> None:
    # A tar with extra end-of-archive blocks, then a second member: ignore_zeros reads on.
    first = tarfile.TarInfo("a")
    first.size = 1
    second = tarfile.TarInfo("b")
    second.size = 1
    raw = first.tobuf() + b"A".ljust(512, b"\0") + b"\0" * 2048 + second.tobuf()
    raw += b"B".ljust(512, b"\0") + b"\0" * 1024
    await extract.extract_stream(chunks(gzip.compress(raw)), dest, owner=pgserver.tools().user)
    assert (dest / "a").read_bytes() == b"A"
    assert (dest / "b").read_bytes() == b"B"


@pytest.mark.parametrize(
    "hostile",
    [
        {"name": "../escaped", "type": tarfile.REGTYPE},
        {"name": "a/../../escaped", "type": tarfile.REGTYPE},
        {"name": "/abs/escaped", "type": tarfile.REGTYPE},
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": "../../outside"},
        {"name": "sub/link", "type": tarfile.SYMTYPE, "linkname": "x/../../escaped"},
        {"name": "hard", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"},
        {"name": "hard", "type": tarfile.LNKTYPE, "linkname": "../escaped"},
        {"name": "dev", "type": tarfile.CHRTYPE},
        {"name": "blk", "type": tarfile.BLKTYPE},
        {"name": "fifo", "type": tarfile.FIFOTYPE},
    ],
)
async def test_unsafe_members_are_refused(dest: Path, hostile: dict[str, object]) -> None:
    info = tarfile.TarInfo(str(hostile["name"]))
    info.type = hostile["type"]  # type: ignore[assignment]
    info.linkname = str(hostile.get("linkname", ""))
    data = archive.gzip_tar({"PG_VERSION": b"15\n"}, extra=[info])
    with pytest.raises(extract.UnsafeMember, match="unsafe member"):
        await extract.extract_stream(chunks(data), dest, owner=pgserver.tools().user)
    assert not (dest.parent / "escaped").exists()
    assert os.listdir(dest) == ["PG_VERSION"]


def _realpath_bypass_archive() -> bytes:
    """The tarfile data-filter bypass fixed after this Python (CVE-2025-4517): symlinks
    through directory names long enough that ``os.path.realpath`` gives up, so the
    filter sees a path inside while the kernel resolves one outside (``../target``)."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    extra = []
    for step in steps:
        directory = tarfile.TarInfo(os.path.join(path, comp))
        directory.type = tarfile.DIRTYPE
        link = tarfile.TarInfo(os.path.join(path, step))
        link.type, link.linkname = tarfile.SYMTYPE, comp
        extra += [directory, link]
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    up = tarfile.TarInfo(linkpath)
    up.type, up.linkname = tarfile.SYMTYPE, "../" * len(steps)
    escape = tarfile.TarInfo("escape")
    escape.type, escape.linkname = tarfile.SYMTYPE, linkpath + "/../target"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in [*extra, up, escape]:
            tar.addfile(info)
        pwned = tarfile.TarInfo("escape/pwned")
        pwned.size = 5
        tar.addfile(pwned, io.BytesIO(b"owned"))
    return buf.getvalue()


async def test_hostile_archive_that_bypasses_the_tarfile_filter_is_refused(dest: Path) -> None:
    target = dest.parent / "target"
    target.mkdir()
    with pytest.raises(extract.UnsafeMember, match=r"contains '\.\.'"):
        await extract.extract_stream(
            chunks(_realpath_bypass_archive()), dest, owner=pgserver.tools().user
        )
    assert list(target.iterdir()) == []


async def test_truncated_and_corrupt_archives_are_errors(dest: Path) -> None:
    data = archive.gzip_tar({"PG_VERSION": b"15\n" * 10000})
    with pytest.raises(errors.StorageError, match="truncated"):
        await extract.extract_stream(
            chunks(data[: len(data) // 2]), dest, owner=pgserver.tools().user
        )
    with pytest.raises(errors.StorageError, match="not valid gzip"):
        await extract.extract_stream(chunks(b"not gzip" * 100), dest, owner=pgserver.tools().user)


async def test_the_producer_waits_when_the_pipe_is_full() -> None:
    loop = asyncio.get_running_loop()
    pipe = extract.ChunkPipe(loop=loop, max_chunks=2)
    await pipe.put(b"1")
    await pipe.put(b"2")
    third = asyncio.ensure_future(pipe.put(b"3"))
    await asyncio.sleep(0)  # let it try: the pipe is full, so it must wait
    assert not third.done()
    assert await asyncio.to_thread(pipe.get) == b"1"
    await asyncio.wait_for(third, 5)
    pipe.close()
    got = [await asyncio.to_thread(pipe.get) for _ in range(3)]
    assert got == [b"2", b"3", b""]


async def test_a_failed_reader_unblocks_the_producer(dest: Path) -> None:
    # Garbage fills a tiny pipe; the reader fails, and the producer gets its error.
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(4096)

    with pytest.raises(errors.StorageError):
        await asyncio.wait_for(
            extract.extract_stream(endless(), dest, owner=pgserver.tools().user, max_chunks=2), 10
        )


async def test_cancellation_stops_the_worker(dest: Path) -> None:
    release = asyncio.Event()
    stalled = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield archive.gzip_tar({"a": b"a"})[:100]
        stalled.set()
        await release.wait()
        yield b""

    task = asyncio.ensure_future(
        extract.extract_stream(stalls(), dest, owner=pgserver.tools().user)
    )
    await asyncio.wait_for(stalled.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
