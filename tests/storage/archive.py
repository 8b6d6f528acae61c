"""Basebackup archives for the test pageserver, made from a real initdb'ed PGDATA.

``make_pgdata_archive`` runs initdb (through ``tests.pgserver``), starts postgres,
creates a marker table with one row, stops it cleanly and tars the directory as a
pageserver would: no ``postgresql.conf`` (the compute writes its own), a
``zenith.signal``, gzip-compressed.
"""

from __future__ import annotations

import io
import shutil
import tarfile

import psycopg

from tests import pgserver

__all__ = ["MARKER", "gzip_tar", "make_pgdata_archive"]

MARKER = "made by the test pageserver's initdb"
_SKIP = {"postgresql.conf", "postmaster.opts", "postmaster.pid"}


def make_pgdata_archive() -> bytes:
    server = pgserver.PgServer.create()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("create table basebackup_marker (note text)")
            conn.execute("insert into basebackup_marker values (%s)", (MARKER,))
        assert server.proc is not None
        server.proc.send_signal(2)  # fast shutdown: a clean checkpoint, data kept
        server.proc.wait(timeout=30)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
            for path in sorted(server.datadir.rglob("*")):
                rel = path.relative_to(server.datadir)
                if str(rel) in _SKIP:
                    continue
                tar.add(path, arcname=str(rel), recursive=False)
            signal = tarfile.TarInfo("zenith.signal")
            signal.size = 8
            signal.mode = 0o600
            tar.addfile(signal, io.BytesIO(b"\0" * 8))
        return buf.getvalue()
    finally:
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


def gzip_tar(members: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A small gzip tar of the given files (and raw members, e.g. hostile links)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()
