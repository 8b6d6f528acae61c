"""Remote extensions as the tests and ``bench.remote_ext`` see them: real archives and a
gateway.

Archives are built as Neon's are (``<ext>.tar.zst`` holding ``share/extension/...`` and
``lib/...``) from the files of Debian extension packages. ``private_install`` copies the
PostgreSQL install tree for the downloads to land in: PostgreSQL is relocatable, so a copy
of ``/usr/lib/postgresql/15`` and ``/usr/share/postgresql/15`` under one new prefix finds
its ``sharedir`` and ``pkglibdir`` inside the copy (``pg_config`` too), and nothing is
written into the system's install. The copy leaves out the packages the tests download,
so their files arrive only by download.

``Gateway`` stands in for Neon's extension gateway: an aiohttp server on loopback that
serves archives by path, counts the requests, and fails on demand (a status for a path,
or a response held until the test releases it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import zstandard
from aiohttp import web

from tests import pgserver, support

PREFIX_DEB_DIR = support.REPO / ".cache" / "debs"
LEFT_OUT = ("pgaudit", "prefix")  # name prefixes of the downloaded extensions' files


def prefix_deb() -> Path | None:
    """The ``postgresql-15-prefix`` package ``scripts/setup`` downloads (not installs)."""
    found = sorted(PREFIX_DEB_DIR.glob("postgresql-15-prefix_*.deb"))
    return found[-1] if found else None


def pg_root() -> Path:
    """``/usr/lib/postgresql/15`` (the directory holding ``bin/postgres``)."""
    return pgserver.tools().postgres.parent.parent


def pg_share() -> Path:
    return Path("/usr/share/postgresql") / pg_root().name


def private_install(dest: Path) -> Path:
    """Copy the install tree under ``dest`` (without ``LEFT_OUT``); its ``bin/postgres``.

    ``dest`` becomes ours (a scratch directory belongs to the PostgreSQL OS user): unpacking
    refuses directories another user could change.
    """
    os.chown(dest, os.geteuid(), os.getegid())

    def ignore(_dir: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith(LEFT_OUT)]

    lib = dest / "usr" / "lib" / "postgresql" / pg_root().name
    share = dest / "usr" / "share" / "postgresql" / pg_root().name
    shutil.copytree(pg_root(), lib, symlinks=True, ignore=ignore)
    shutil.copytree(pg_share(), share, symlinks=True, ignore=ignore)
    return lib / "bin" / "postgres"


def unpack_deb(deb: Path, dest: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", os.fspath(deb), os.fspath(dest)], check=True)
    return dest


def installed_package_tree(package: str, dest: Path) -> Path:
    """The files of an installed Debian package, copied under ``dest`` (``dpkg -L``)."""
    listing = subprocess.run(["dpkg", "-L", package], check=True, capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        src = Path(line)
        if src.is_file() and not src.is_symlink():
            target = dest / src.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def build(tree: Path, *, extra: Iterable[tarfile.TarInfo] = ()) -> bytes:
    """``<ext>.tar.zst`` from a package tree: its extension files under
    ``share/extension/`` and its libraries (and bitcode) under ``lib/``."""
    version = pg_root().name
    sources = {
        "share/extension": tree / "usr" / "share" / "postgresql" / version / "extension",
        "lib": tree / "usr" / "lib" / "postgresql" / version / "lib",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, src in sources.items():
            if src.is_dir():
                tar.add(src, arcname=arcname)
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


def raw_archive(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A ``.tar.zst`` of exactly these members (for the hostile-archive tests)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            member.size = len(data) if member.isreg() else 0
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


@dataclasses.dataclass
class Gateway:
    port: int
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    hold: asyncio.Event | None = None
    requests: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ext/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests[path] += 1
        if self.hold is not None:
            await self.hold.wait()
        if path in self.statuses:
            return web.Response(status=self.statuses[path], text="gateway says no")
        body = self.files.get(path)
        if body is None:
            return web.Response(status=404, text="no such archive")
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), 4096):  # in pieces, as a real transfer arrives
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Gateway]:
    gateway = Gateway(port=pgserver.free_port())
    app = web.Application()
    app.router.add_get("/ext/{path:.+}", gateway.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", gateway.port).start()
        yield gateway
    finally:
        if gateway.hold is not None:
            gateway.hold.set()
        await runner.cleanup()
