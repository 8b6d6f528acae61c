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
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from compute_ctl.compute import errors, liveness, pgtools, safefs

__all__ = [
    "Existing",
    "Inspection",
    "binary_major",
    "check_parent_traversable",
    "check_wipe_safe",
    "clear_stale_locks",
    "ensure_socket_dir",
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
_PG_VERSION_MAX = 16
_PG_VERSION_RE = re.compile(rb"(\d{1,3}(?:\.\d{1,3})?)\n?")


class Existing(enum.Enum):
    MISSING = "missing"  # no directory, or an empty one
    VALID = "valid"  # PG_VERSION and global/pg_control present
    DAMAGED = "damaged"  # a PGDATA without pg_control (interrupted initdb or basebackup)
    FOREIGN = "foreign"  # non-empty, and not a PGDATA


@dataclasses.dataclass(frozen=True)
class Inspection:
    kind: Existing
    major: str | None = None
    bad_version: bool = False  # a PG_VERSION that is a link, not a file, or no version


def _read_version(pgdata: Path) -> str | None:
    """``PG_VERSION`` read without following a link, size-capped and pattern-checked; ``None``
    when it is absent. Its contents never reach a message: the OS user may have made it a
    link to a root-only file."""
    try:
        raw = safefs.read_bytes(pgdata, "PG_VERSION", limit=_PG_VERSION_MAX)
    except (OSError, ValueError):
        raise _BadVersion from None
    if raw is None:
        return None
    match = _PG_VERSION_RE.fullmatch(raw)
    if match is None:
        raise _BadVersion
    return match.group(1).decode()


class _BadVersion(Exception):
    pass


def inspect(pgdata: Path) -> Inspection:
    """What is at ``pgdata`` now. Reads only."""
    if not pgdata.exists():
        return Inspection(Existing.MISSING)
    if not pgdata.is_dir():
        return Inspection(Existing.FOREIGN)
    try:
        major = _read_version(pgdata)
    except _BadVersion:
        return Inspection(Existing.FOREIGN, bad_version=True)
    if major is not None:
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
    found = inspect(pgdata)
    if found.kind is Existing.FOREIGN:
        why = "its PG_VERSION is not a plain version file" if found.bad_version else "no PG_VERSION"
        raise errors.ConfigError(
            f"refusing to wipe {pgdata}: it is not empty and does not look like a "
            f"PostgreSQL data directory ({why})"
        )
    liveness.check_no_postmaster(pgdata)


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
    """Where postgres puts its unix socket: a directory only the OS user (and root) can
    enter, because pg_hba.conf trusts the superuser there. PGDATA itself (0700) unless the
    path would be too long for a socket; then a private directory in the temp directory."""
    if len(str(pgdata)) + len("/.s.PGSQL.65535.lock") <= _MAX_SOCKET_PATH:
        return str(pgdata)
    digest = hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"compute_ctl-{digest}")


def ensure_socket_dir(pgdata: Path, user: pgtools.OsUser) -> None:
    """Make the private socket directory when it is not PGDATA: 0700, owned by the OS user.

    An existing one must already be exactly that (not a link, not someone else's): in a
    shared temp directory another user may have made it first.
    """
    path = socket_dir_for(pgdata)
    if path == str(pgdata):
        return
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
        if user.uid is not None and user.gid is not None:
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
    st = os.lstat(path)
    owner = user.uid if user.uid is not None else os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_mode & 0o077:
        raise errors.ConfigError(
            f"socket directory {path} must be a directory of OS user {user.name!r} with "
            f"mode 0700 (it is {stat.filemode(st.st_mode)}, uid {st.st_uid})"
        )


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
    A ``postmaster.pid`` still in use (its postmaster runs in PGDATA, or any process still
    has its shared memory attached: ``liveness``) is an error and is left in place. A socket
    lock is removed only when its pid is dead: in a shared directory it may belong to
    another cluster.
    """
    liveness.check_no_postmaster(pgdata)
    if safefs.exists(pgdata, "postmaster.pid"):
        logger.info("removing stale %s", pgdata / "postmaster.pid")
        safefs.remove(pgdata, "postmaster.pid")
    for lock in Path(socket_dir).glob(".s.PGSQL.*.lock"):
        owner = liveness.lock_pid(lock)
        if owner is not None and not liveness.live(owner):
            logger.info("removing stale socket lock %s (pid %s is gone)", lock, owner)
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)


def write_config_files(
    *,
    pgdata: Path,
    user: pgtools.OsUser,
    postgresql_conf: str,
    hba: str | None = None,
) -> None:
    """(Re)write ``postgresql.conf`` and, when given, ``pg_hba.conf``; make sure the
    override file ``postgresql.conf`` includes last exists."""
    # safefs: never through a link the OS user planted; a reload never reads half a file.
    # Not fsynced: compute_ctl renders it from the spec before every start, so a power cut
    # loses nothing, and two fsyncs were the largest part of a one-setting change's write.
    safefs.write_text(pgdata, "postgresql.conf", postgresql_conf, owner=user, durable=False)
    from compute_ctl.compute import pgconf  # lazily: pgconf loads pydantic (start-up path)

    # Without it every process logs "skipping missing ..." per reload.
    if not safefs.exists(pgdata, pgconf.OVERRIDE_FILE):
        safefs.write_text(pgdata, pgconf.OVERRIDE_FILE, "", owner=user)
    if hba is not None:
        safefs.write_text(pgdata, "pg_hba.conf", hba, owner=user)
