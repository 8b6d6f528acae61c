"""Whether a PGDATA is in use: compute_ctl's own lock on it, and a postmaster's traces.

Two compute_ctl processes on one PGDATA must never both run: the second would wipe the
first one's live data. So each holds an exclusive ``flock`` on ``<pgdata>.lock`` and on
``<pgdata>.warmup.lock`` (the spare directory it may initdb and rename into place) for its
whole lifetime; a lock beside PGDATA survives the wipe and the rename of PGDATA itself.
The kernel drops the lock when the process dies, however it dies.

A postmaster may also outlive the compute_ctl that started it, or its backends may outlive
the postmaster. ``postmaster.pid`` is in use while its pid runs in PGDATA or while its
shared memory segment (key and id on line 7) still has processes attached: PostgreSQL's
own interlock. Such a PGDATA is never wiped and its ``postmaster.pid`` never removed.

Reads ``/proc``; no PostgreSQL connection, no spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from pathlib import Path

from compute_ctl.compute import errors, safefs

__all__ = [
    "PgdataLock",
    "check_no_postmaster",
    "live",
    "lock_pid",
    "postmaster_in_use",
    "shm_attached",
]

_PIDFILE_MAX = 4096
_SYSVIPC_SHM = Path("/proc/sysvipc/shm")


def live(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (PostgreSQL's ``kill(pid, 0)`` test thinks
    it does, and a SIGKILLed postmaster stays a zombie where nothing reaps orphans)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


def lock_pid(path: Path) -> int | None:
    """The pid on the first line of a PostgreSQL lock file (not followed if a link)."""
    try:
        raw = safefs.read_bytes(path.parent, path.name, limit=_PIDFILE_MAX)
    except (OSError, ValueError):
        return None
    if raw is None:
        return None
    first = raw.split(b"\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def shm_attached(shmid: int) -> int:
    """How many processes have System V segment ``shmid`` attached (0: none or gone)."""
    try:
        lines = _SYSVIPC_SHM.read_text().splitlines()
    except OSError:
        return 0
    header = lines[0].split() if lines else []
    try:
        id_col, nattch_col = header.index("shmid"), header.index("nattch")
    except ValueError:
        return 0
    for line in lines[1:]:
        cols = line.split()
        if len(cols) > max(id_col, nattch_col) and cols[id_col] == str(shmid):
            return int(cols[nattch_col])
    return 0


def _shmid(pidfile_text: str) -> int | None:
    lines = pidfile_text.split("\n")
    if len(lines) < 7:
        return None
    fields = lines[6].split()
    return int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else None


def postmaster_in_use(pgdata: Path) -> str | None:
    """Why ``pgdata``'s ``postmaster.pid`` is still in use, or ``None`` when it is stale
    (or absent)."""
    try:
        raw = safefs.read_bytes(pgdata, "postmaster.pid", limit=_PIDFILE_MAX)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "its postmaster.pid is not a regular file"
    if raw is None:
        return None
    text = raw.decode(errors="replace")
    first = text.split("\n", 1)[0].strip()
    pid = int(first) if first.isdigit() else None
    if pid is not None and live(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cwd").resolve() == pgdata.resolve():
                return f"postmaster pid {pid} is running on it"
    shmid = _shmid(text)
    if shmid is not None:
        attached = shm_attached(shmid)
        if attached:
            return f"{attached} process(es) still have its shared memory attached"
    return None


def check_no_postmaster(pgdata: Path) -> None:
    """Raise ``ConfigError`` while a postmaster or its backends still use ``pgdata``."""
    if not pgdata.is_dir():
        return
    why = postmaster_in_use(pgdata)
    if why is not None:
        raise errors.ConfigError(f"PGDATA {pgdata} is in use: {why}; refusing to touch it")


@dataclasses.dataclass
class PgdataLock:
    """The exclusive locks of one compute_ctl on its PGDATA and warm-up directory."""

    paths: tuple[Path, ...]
    _fds: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def acquire(cls, pgdata: Path, warmup: Path) -> PgdataLock:
        """Take both locks or none; ``ConfigError`` naming the holder's lock when taken."""
        lock = cls(paths=(_lock_path(pgdata), _lock_path(warmup)))
        try:
            for path in lock.paths:
                lock._fds.append(_flock(path, pgdata))
        except BaseException:
            lock.release()
            raise
        return lock

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def _lock_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".lock")


def _flock(path: Path, pgdata: Path) -> int:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.ConfigError(
            f"PGDATA {pgdata} is in use by another compute_ctl (it holds {path})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd
