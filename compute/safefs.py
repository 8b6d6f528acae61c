"""Files under PGDATA, written and read by root without following links.

PGDATA belongs to the OS user that runs postgres, so anything in it may be a link that
user planted. compute_ctl runs as root, and every path-based write, chmod or chown there
would follow such a link out of PGDATA. Here every access opens the directory once and
works relative to its descriptor:

- writes create a fresh temp file with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (an existing name,
  link or not, is unlinked first; a link re-planted in between makes ``O_EXCL`` fail),
  then ``fchmod``/``fchown``/``fsync`` the descriptor and ``renameat`` it over the target
  in the same directory (rename never follows a link);
- reads open with ``O_NOFOLLOW``, require a regular file and cap the size.

The directory itself (PGDATA, chosen by root with ``-D``) may be reached through links.
Owns only these primitives; what the files contain is the callers' business.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from compute_ctl.compute import errors, pgtools

__all__ = [
    "TEMP_SUFFIX",
    "copy_file",
    "exists",
    "read_bytes",
    "remove",
    "remove_temp_files",
    "temp_name",
    "write_bytes",
    "write_text",
]

TEMP_SUFFIX = ".compute_ctl.tmp"
_OPEN_RETRIES = 3


def temp_name(name: str) -> str:
    """The temp file ``write_bytes`` writes ``name`` through (a leftover is removed at start)."""
    return f".{name}{TEMP_SUFFIX}"


@contextlib.contextmanager
def _dir(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")


def write_bytes(
    directory: Path,
    name: str,
    data: bytes,
    *,
    owner: pgtools.OsUser,
    mode: int = 0o600,
    durable: bool = True,
) -> None:
    """Atomically replace ``directory/name`` with ``data``, owned by ``owner``.

    ``durable=False`` skips the two fsyncs: for a file rewritten before every start
    anyway, where readers need the atomic rename, not survival of a power cut."""
    _check_name(name)
    tmp = temp_name(name)
    with _dir(directory) as dfd:
        fd = -1
        for _ in range(_OPEN_RETRIES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=dfd,
                )
                break
            except FileExistsError:
                continue
        if fd < 0:
            raise errors.ConfigError(f"cannot create {directory / tmp}: it keeps reappearing")
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                if owner.uid is not None and owner.gid is not None:
                    os.fchown(fd, owner.uid, owner.gid)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            os.fsync(dfd)


def write_text(
    directory: Path,
    name: str,
    text: str,
    *,
    owner: pgtools.OsUser,
    mode: int = 0o600,
    durable: bool = True,
) -> None:
    write_bytes(directory, name, text.encode(), owner=owner, mode=mode, durable=durable)


def read_bytes(directory: Path, name: str, *, limit: int) -> bytes | None:
    """The contents of a regular file ``directory/name`` (not a link), at most ``limit``
    bytes; ``None`` when it does not exist. Raises ``OSError`` for a link or a non-file
    and ``ValueError`` when it is larger than ``limit``."""
    _check_name(name)
    with _dir(directory) as dfd:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        except FileNotFoundError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IsADirectoryError(f"{directory / name} is not a regular file")
            data = os.read(fd, limit + 1)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{directory / name} is larger than {limit} bytes")
    return data


def exists(directory: Path, name: str) -> bool:
    """Whether ``directory/name`` exists (a link counts; it is not followed)."""
    _check_name(name)
    with _dir(directory) as dfd:
        try:
            os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
    return True


def remove(directory: Path, name: str) -> None:
    """Unlink ``directory/name`` if it is there (a link is removed, not followed)."""
    _check_name(name)
    with _dir(directory) as dfd, contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dfd)


def copy_file(
    directory: Path, src: str, dst: str, *, owner: pgtools.OsUser, limit: int = 1 << 20
) -> None:
    """Copy a small regular file within ``directory`` (neither end followed if a link)."""
    data = read_bytes(directory, src, limit=limit)
    if data is None:
        raise FileNotFoundError(directory / src)
    write_bytes(directory, dst, data, owner=owner)


def remove_temp_files(directory: Path, *, legacy: frozenset[str] = frozenset()) -> list[str]:
    """Remove the temp files a failed ``write_bytes`` left in ``directory`` (and the
    ``legacy`` names older versions used); their names."""
    removed = []
    with _dir(directory) as dfd:
        for name in sorted(os.listdir(dfd)):
            if (name.startswith(".") and name.endswith(TEMP_SUFFIX)) or name in legacy:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
                removed.append(name)
    return removed
