"""Unpack one ``<ext>.tar.zst`` into PostgreSQL's extension and library directories.

Blocking (run it in a thread). The archive is zstd-decompressed and untarred as a stream
into a fresh staging directory, with the rules of ``storage.extract.check_member``:
relative names without ``..``, links only pointing down the tree, nothing but regular
files, directories and such links; Python's ``data`` filter runs after as a second layer.
Only ``share/extension/`` and ``lib/`` are extracted (Neon extracts everything, then uses
only those two). Files are owned by compute_ctl's own user (root in a pod), as the rest of
PostgreSQL's install is; the decompressed size is capped.

Then, as Neon: each entry of ``share/extension/`` is renamed into ``<sharedir>/extension``
and each entry of ``lib/`` into ``<pkglibdir>``, replacing a file of the same name. Beyond
Neon, a directory is merged into an existing one (Neon's rename fails on a non-empty
directory and only warns). An entry that still cannot be placed (a directory compute_ctl
may not write to, a file where a directory should be) fails the unpack once every other
entry is placed, where Neon only warns and answers 200. Renames never follow a link at the
target.

Every directory on the way to the targets and the staging directory must be changeable
only by root or compute_ctl's own user (or be sticky, as ``/tmp``); otherwise nothing is
unpacked. As root, writing where the postgres OS user can swap a directory for a link
would let it redirect root's writes. Owns nothing but these files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, cast

from compute_ctl.compute import errors
from compute_ctl.compute.storage import extract

__all__ = ["MAX_UNPACKED_BYTES", "Source", "Targets", "UnpackError", "UnsafeArchive", "unpack"]

logger = logging.getLogger(__name__)

MAX_UNPACKED_BYTES = 4 << 30
_TAR_BUFSIZE = 64 * 1024  # as storage.extract: fewer, larger reads of the stream
_COPY_BUFSIZE = 1024 * 1024
_SOURCES = (("share", "extension"), ("lib",))


class UnpackError(errors.ComputeError):
    """The archive's files could not all be put in place."""


class UnsafeArchive(UnpackError):
    """An archive that is not valid, too large, or would write somewhere odd."""


class Source(Protocol):
    """What the archive is read from: a file, or ``storage.extract.PipeReader``."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class Targets:
    """Where the files go: ``<sharedir>/extension`` and ``<pkglibdir>``, plus the staging
    root (Neon's ``<pgbin minus /bin/postgres>/download_extensions``)."""

    extension_dir: Path
    pkglibdir: Path
    staging_root: Path


def _check_trusted(path: Path) -> None:
    """Every directory on the way to ``path`` (as given and resolved) may be changed only by
    root or by us, or is sticky: compute_ctl (root in a pod) writes there, and a directory
    the postgres OS user could change would let it redirect those writes."""
    me = os.geteuid()
    given = Path(os.path.abspath(path))
    for chain in (given, Path(os.path.realpath(given))):
        for directory in (chain, *chain.parents):
            st = os.stat(directory)
            others_write = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
            if st.st_uid not in (0, me) or others_write:
                raise UnpackError(
                    f"{directory} may be changed by another user: refusing to unpack there"
                )


def _wanted(parts: list[str]) -> bool:
    return any(parts[: len(src)] == list(src) for src in _SOURCES) or any(
        list(src[: len(parts)]) == parts for src in _SOURCES
    )


def _member_filter(budget: list[int]) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    uid, gid = os.getuid(), os.getgid()

    def member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        try:
            name = extract.check_member(member)
        except extract.UnsafeMember as e:
            raise UnsafeArchive(str(e)) from None
        if name == "." or not _wanted(name.split("/")):
            return None
        budget[0] -= member.size
        if budget[0] < 0:
            raise UnsafeArchive(f"archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        safe = tarfile.data_filter(member.replace(name=name, deep=False), dest)
        return safe.replace(uid=uid, gid=gid, uname="", gname="", deep=False)

    return member_filter


def _extract(archive: Source, dest: Path) -> None:
    import zstandard  # lazily: off compute_ctl's start path (a few ms)

    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], archive),
        read_across_frames=True,  # only read() is used
    )
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=_TAR_BUFSIZE) as tar:
            tar.copybufsize = _COPY_BUFSIZE  # type: ignore[attr-defined]  # missing in typeshed
            # S202: the filter is what makes this safe (see the module docstring).
            tar.extractall(  # noqa: S202
                os.fspath(dest), filter=_member_filter([MAX_UNPACKED_BYTES]), numeric_owner=True
            )
    except tarfile.FilterError as e:
        raise UnsafeArchive(f"unsafe member: {e}") from e
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
        raise UnsafeArchive(f"not a valid .tar.zst archive: {e}") from e


def _place(src: Path, dst_dir: Path, name: str) -> None:
    """Move ``src`` to ``dst_dir/name``: files replace, directories merge."""
    target = dst_dir / name
    if src.is_dir() and not src.is_symlink() and os.path.lexists(target):
        if target.is_symlink() or not target.is_dir():
            raise IsADirectoryError(f"{target} exists and is not a directory")
        for child in sorted(os.listdir(src)):
            _place(src / child, target, child)
        return
    os.rename(src, target)  # replaces a file or a link, never follows one


def _move_all(src_dir: Path, dst_dir: Path, failed: list[str]) -> list[str]:
    placed: list[str] = []
    if not src_dir.is_dir():
        return placed
    for name in sorted(os.listdir(src_dir)):
        try:
            _place(src_dir / name, dst_dir, name)
            placed.append(name)
        except OSError as e:
            logger.warning("cannot move %s into %s: %s", name, dst_dir, e)
            failed.append(f"{dst_dir / name}: {e.strerror or e}")
    return placed


def unpack(archive: Source, *, targets: Targets, what: str) -> list[str]:
    """Extract ``archive`` and move its files into place; the names placed.

    ``UnpackError`` names every entry that could not be placed (the others stay placed).
    """
    try:
        for directory in (targets.extension_dir, targets.pkglibdir, targets.staging_root.parent):
            _check_trusted(directory)
        targets.staging_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        _check_trusted(targets.staging_root)
        staging = Path(tempfile.mkdtemp(prefix=f"{what}.", dir=targets.staging_root))
    except OSError as e:
        raise UnpackError(f"cannot create a staging directory: {e}") from e
    try:
        _extract(archive, staging)
        failed: list[str] = []
        placed = _move_all(staging / "share" / "extension", targets.extension_dir, failed)
        placed += _move_all(staging / "lib", targets.pkglibdir, failed)
        if failed:
            raise UnpackError(f"cannot place {'; '.join(failed)}")
        return placed
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
