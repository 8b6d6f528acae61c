"""PGDATA on disk: checks before touching it, wipe and ``initdb``, keeping a valid one, and
writing ``postgresql.conf`` / ``pg_hba.conf``.

Neon wipes PGDATA on every start (``rm -rf; mkdir; chmod 700``); that stays the default.
With ``--keep-pgdata`` an existing PGDATA whose ``PG_VERSION`` matches the binary is kept
(for computes on persistent volumes) and only its config files are rewritten.

Two guards Neon lacks: the parent directories must be traversable by the OS user that runs
postgres (else postgres fails later with a confusing error), and a non-empty directory that
does not look like a PGDATA is never wiped (``-D /home`` must not erase anything).

This module owns files only; starting postgres is ``postgres``, the conf text is ``pgconf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import grp
import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from compute_ctl.compute import errors, pgtools

__all__ = [
    "Existing",
    "Inspection",
    "binary_major",
    "check_parent_traversable",
    "check_wipe_safe",
    "clear_stale_locks",
    "init_empty",
    "init_fresh",
    "inspect",
    "move_into_place",
    "overcommit_strict",
    "prewarm",
    "socket_dir_for",
    "warmup_dir",
    "write_config_files",
]

logger = logging.getLogger(__name__)

# Files compute_ctl itself writes before PostgreSQL's own (Neon writes postgresql.conf
# before the basebackup), and a volume's lost+found: a directory holding only these may
# be wiped even though it has no PG_VERSION.
_OWN_FILES = frozenset(
    {"postgresql.conf", "pg_hba.conf", "compute_ctl_temp_override.conf", "lost+found"}
)
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL


class Existing(enum.Enum):
    MISSING = "missing"  # no directory, or an empty one
    VALID = "valid"  # PG_VERSION and global/pg_control present
    DAMAGED = "damaged"  # a PGDATA without pg_control (interrupted initdb or basebackup)
    FOREIGN = "foreign"  # non-empty, and not a PGDATA


@dataclasses.dataclass(frozen=True)
class Inspection:
    kind: Existing
    major: str | None = None


def inspect(pgdata: Path) -> Inspection:
    """What is at ``pgdata`` now. Reads only."""
    if not pgdata.exists():
        return Inspection(Existing.MISSING)
    if not pgdata.is_dir():
        return Inspection(Existing.FOREIGN)
    version_file = pgdata / "PG_VERSION"
    if version_file.is_file():
        major = version_file.read_text().strip()
        if (pgdata / "global" / "pg_control").is_file():
            return Inspection(Existing.VALID, major)
        return Inspection(Existing.DAMAGED, major)
    names = {entry.name for entry in pgdata.iterdir()}
    if names <= _OWN_FILES:
        return Inspection(Existing.MISSING)
    return Inspection(Existing.FOREIGN)


def check_wipe_safe(pgdata: Path) -> None:
    """Refuse to wipe something that is not a PGDATA."""
    if pgdata.exists() and not pgdata.is_dir():
        raise errors.ConfigError(f"PGDATA {pgdata} exists and is not a directory")
    if inspect(pgdata).kind is Existing.FOREIGN:
        raise errors.ConfigError(
            f"refusing to wipe {pgdata}: it is not empty and does not look like a "
            "PostgreSQL data directory (no PG_VERSION)"
        )


def _can_traverse(st: os.stat_result, user: pgtools.OsUser, groups: set[int]) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_parent_traversable(pgdata: Path, user: pgtools.OsUser) -> None:
    """Every existing ancestor of ``pgdata`` must be searchable by ``user``."""
    if not user.switches:
        return  # we run postgres as ourselves: our own access checks apply
    groups = {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}
    if user.gid is not None:
        groups.add(user.gid)
    for ancestor in pgdata.absolute().parents:
        try:
            st = ancestor.stat()
        except FileNotFoundError:
            continue  # created by us (0755) before initdb
        if not _can_traverse(st, user, groups):
            raise errors.ConfigError(
                f"OS user {user.name!r} cannot traverse {ancestor} (mode "
                f"{stat.filemode(st.st_mode)}), so PostgreSQL could not reach PGDATA {pgdata}"
            )


def socket_dir_for(pgdata: Path) -> str:
    """Where postgres puts its unix socket: PGDATA itself unless the path would be too long."""
    if len(str(pgdata)) + len("/.s.PGSQL.65535.lock") <= _MAX_SOCKET_PATH:
        return str(pgdata)
    return tempfile.gettempdir()


def overcommit_strict() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2"
    except OSError:
        return False


async def binary_major(tools: pgtools.PgTools) -> str:
    """The major version of the postgres binary, as PG_VERSION spells it (``15``)."""
    out, _ = await tools.run([tools.postgres, "--version"])
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out.decode())
    if not match:
        raise errors.PostgresError(f"cannot read the version of {tools.postgres}")
    major = int(match.group(1))
    # Before 10, PG_VERSION carries "9.6"; afterwards only the major number.
    return f"{major}.{match.group(2)}" if major < 10 else str(major)


def _wipe(pgdata: Path, user: pgtools.OsUser) -> None:
    """``rm -rf; mkdir; chmod 700`` without removing the directory itself (it may be a
    mount point)."""
    if pgdata.is_dir():
        for entry in list(pgdata.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    else:
        pgdata.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        pgdata.mkdir(mode=0o700)
    pgdata.chmod(0o700)
    user.chown(pgdata)


def init_empty(pgdata: Path, user: pgtools.OsUser) -> None:
    """Wipe PGDATA (Neon's ``rm -rf; mkdir; chmod 700``) for a basebackup to fill."""
    check_wipe_safe(pgdata)
    _wipe(pgdata, user)


def move_into_place(prepared: Path, pgdata: Path) -> None:
    """Replace PGDATA with ``prepared`` (a sibling on the same filesystem) by rename(2).

    PGDATA's contents are wiped first; renaming a directory onto an empty one replaces it.
    Raises ``OSError`` when that cannot work (PGDATA is a mount point, another filesystem).
    """
    check_wipe_safe(pgdata)
    if pgdata.is_dir():
        for entry in list(pgdata.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    os.rename(prepared, pgdata)


async def init_fresh(
    *,
    pgdata: Path,
    tools: pgtools.PgTools,
    superuser: str,
    sync: bool,
) -> None:
    """Wipe PGDATA and ``initdb`` it with ``superuser`` as the bootstrap superuser.

    ``sync=False`` passes ``--no-sync``: a wiped-on-every-start PGDATA (Neon's model) needs
    no durability for its template files; a kept PGDATA is synced once, at creation.
    """
    init_empty(pgdata, tools.user)
    argv: list[str | os.PathLike[str]] = [
        tools.tool("initdb"),
        "-D",
        pgdata,
        "-U",
        superuser,
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
        "--auth=trust",
        "--no-instructions",
    ]
    if not sync:
        argv.append("--no-sync")
    await tools.run(argv)


def _live(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (PostgreSQL's ``kill(pid, 0)`` test thinks
    it does, and a SIGKILLed postmaster stays a zombie where nothing reaps orphans)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


def _lock_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(first) if first.lstrip("-").isdigit() else None


def warmup_dir(pgdata: Path) -> Path:
    return pgdata.with_name(pgdata.name + ".warmup")


async def prewarm(*, pgdata: Path, tools: pgtools.PgTools, superuser: str, sync: bool) -> bool:
    """``initdb`` a spare PGDATA beside PGDATA (``warmup_dir``); whether it is ready.

    Neon's pooled computes initdb into ``<pgdata>.warmup`` while idle (to warm the VM) and
    delete it; we keep it for ``move_into_place``. Failures only make the start run initdb
    itself; whatever is left half-made is removed, also when cancelled.
    """
    warm = warmup_dir(pgdata)
    try:
        await init_fresh(pgdata=warm, tools=tools, superuser=superuser, sync=sync)
    except (errors.ComputeError, OSError) as e:
        logger.warning("prewarm failed, the start will run initdb: %s", e)
        shutil.rmtree(warm, ignore_errors=True)
        return False
    except asyncio.CancelledError:
        shutil.rmtree(warm, ignore_errors=True)
        raise
    logger.info("prewarmed a PGDATA in %s", warm)
    return True


def clear_stale_locks(pgdata: Path, *, socket_dir: str) -> None:
    """Remove ``postmaster.pid`` and unix-socket lock files left by a postmaster that is gone.

    PostgreSQL refuses to start while the pid in a lock file belongs to any live process,
    which after a restart is often an unrelated one (or the zombie of the old postmaster).
    A live postmaster of this PGDATA (its working directory is PGDATA) is an error. A socket
    lock is removed only when its pid is dead: in a shared directory it may belong to
    another cluster.
    """
    pidfile = pgdata / "postmaster.pid"
    pid = _lock_pid(pidfile)
    if pidfile.exists():
        if pid is not None and _live(pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cwd").resolve() == pgdata.resolve():
                    raise errors.PostgresError(
                        f"another postmaster (pid {pid}) is running on PGDATA {pgdata}"
                    )
        logger.info("removing stale %s (pid %s is gone)", pidfile, pid)
        pidfile.unlink(missing_ok=True)
    for lock in Path(socket_dir).glob(".s.PGSQL.*.lock"):
        owner = _lock_pid(lock)
        if owner is not None and not _live(owner):
            logger.info("removing stale socket lock %s (pid %s is gone)", lock, owner)
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)


def _write_atomic(path: Path, text: str, user: pgtools.OsUser) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    user.chown(tmp)
    tmp.replace(path)  # a concurrent reload never reads half a file


def write_config_files(
    *,
    pgdata: Path,
    user: pgtools.OsUser,
    postgresql_conf: str,
    hba: str | None = None,
) -> None:
    """(Re)write ``postgresql.conf`` and, when given, ``pg_hba.conf``; make sure the
    override file ``postgresql.conf`` includes last exists."""
    _write_atomic(pgdata / "postgresql.conf", postgresql_conf, user)
    from compute_ctl.compute import pgconf  # lazily: pgconf loads pydantic (start-up path)

    override = pgdata / pgconf.OVERRIDE_FILE
    if not override.exists():  # else every process logs "skipping missing ..." per reload
        _write_atomic(override, "", user)
    if hba is not None:
        _write_atomic(pgdata / "pg_hba.conf", hba, user)
