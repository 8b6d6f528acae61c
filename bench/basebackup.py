"""Benchmark: streaming basebackup extraction against ``tar -xzf`` of the same archive.

Generates one gzip tar archive (default ~200 MB compressed, from semi-compressible
data shaped like a PGDATA: many small files and some 1 MiB segments) in a temporary
directory, then alternately extracts it with ``storage.extract.extract_stream`` (fed
in 64 KiB chunks from an async iterator, as the pageserver's ``COPY OUT`` data is)
and with ``tar -xzf``, and prints the median times and their ratio (target <= 1.2).

    .venv/bin/python -m bench.basebackup [--size-mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from compute_ctl.compute import pgtools
from compute_ctl.compute.storage import extract

_CHUNK = 64 * 1024


def _payload(rng: random.Random, size: int) -> bytes:
    """About 2:1 compressible: random halves interleaved with low-entropy halves."""
    parts = []
    remaining = size
    while remaining > 0:
        n = min(8192, remaining)
        half = n // 2
        parts.append(rng.randbytes(half))
        parts.append(bytes(rng.choice(b"abcd    \n") for _ in range(64)) * (-(-(n - half) // 64)))
        remaining -= n
    return b"".join(parts)[:size]


def make_archive(path: Path, *, size_mb: int) -> tuple[int, int]:
    """Write the archive; return (compressed bytes, member count)."""
    rng = random.Random(42)
    target = size_mb * 1024 * 1024
    members = 0
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for d in ("global", "base/1", "base/5", "pg_xact", "pg_wal", "pg_multixact/members"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            tar.addfile(info)
        block = _payload(rng, 1024 * 1024)
        i = 0
        while path.stat().st_size < target:
            size = 1024 * 1024 if i % 4 == 0 else rng.choice((8192, 16384, 65536, 262144))
            data = block[: size - 8] + i.to_bytes(8, "little")
            if i % 16 == 0:
                block = _payload(rng, 1024 * 1024)
            info = tarfile.TarInfo(f"base/{1 if i % 2 else 5}/{16384 + i}")
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
            members += 1
            i += 1
    return path.stat().st_size, members


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _ours(archive: Path, dest: Path, owner: pgtools.OsUser) -> float:
    start = time.perf_counter()
    asyncio.run(extract.extract_stream(_chunks(archive), dest, owner=owner))
    return time.perf_counter() - start


def _tar(archive: Path, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "-xzf", archive, "-C", dest], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="compressed archive size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    owner = pgtools.OsUser(name="bench", uid=None, gid=None, home="/")

    with tempfile.TemporaryDirectory(prefix="bench-basebackup-") as tmp:
        base = Path(tmp)
        archive = base / "basebackup.tar.gz"
        start = time.perf_counter()
        size, members = make_archive(archive, size_mb=args.size_mb)
        print(
            f"archive: {size / 1e6:.0f} MB compressed, {members} files, "
            f"made in {time.perf_counter() - start:.1f} s"
        )
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.rounds):
            for name, runner in (("ours", ours), ("tar", theirs)):
                dest = base / f"out-{name}"
                dest.mkdir()
                os.sync()
                if name == "ours":
                    runner.append(_ours(archive, dest, owner))
                else:
                    runner.append(_tar(archive, dest))
                shutil.rmtree(dest)
        ours_s = statistics.median(ours)
        tar_s = statistics.median(theirs)
        print(f"extract_stream: median {ours_s:.2f} s  ({size / ours_s / 1e6:.0f} MB/s compressed)")
        print(f"tar -xzf:       median {tar_s:.2f} s  ({size / tar_s / 1e6:.0f} MB/s compressed)")
        print(f"ratio ours/tar: {ours_s / tar_s:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
