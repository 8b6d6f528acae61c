"""Where the PostgreSQL binaries are, and how to run them as the unprivileged OS user.

PostgreSQL refuses to run as root. When compute_ctl runs as root it runs ``initdb``,
``postgres`` and every other PostgreSQL tool as ``os_user`` (default ``postgres``);
otherwise it runs them as itself. Every child also gets a parent-death signal, so a
SIGKILLed compute_ctl leaves no postgres behind: SIGKILL for a tool, SIGQUIT for the
postmaster, whose immediate shutdown also ends its backends (a SIGKILLed postmaster
would leave a busy backend running on, orphaned).

This module owns the privilege drop and the binary lookup; it does not know what the
tools are for (that is ``postgres``, ``pgdata`` and the storage modules).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import grp
import os
import pwd
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from compute_ctl.compute import errors

__all__ = ["POSTMASTER_DEATH_SIGNAL", "OsUser", "PgTools", "find_pgbin", "parent_death_preexec"]

_PR_SET_PDEATHSIG = 1
# What a postmaster gets when compute_ctl dies: immediate shutdown, children included.
POSTMASTER_DEATH_SIGNAL = signal.SIGQUIT
_DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


@dataclasses.dataclass(frozen=True)
class OsUser:
    """The identity PostgreSQL processes run as. ``None`` fields mean "as ourselves"."""

    name: str
    uid: int | None
    gid: int | None
    home: str

    @classmethod
    def resolve(cls, name: str) -> OsUser:
        """Resolve ``name`` when we are root; otherwise run as the current user."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return cls(name=me.pw_name, uid=None, gid=None, home=me.pw_dir)
        try:
            entry = pwd.getpwnam(name)
        except KeyError as e:
            raise errors.ConfigError(
                f"running as root, PostgreSQL must run as an unprivileged user, "
                f"but OS user {name!r} does not exist (see --os-user)"
            ) from e
        if entry.pw_uid == 0:
            raise errors.ConfigError(f"OS user {name!r} is root; PostgreSQL refuses to run as root")
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)

    @property
    def switches(self) -> bool:
        return self.uid is not None

    def chown(self, path: Path) -> None:
        """Give ``path`` to this user (no-op when we do not switch users)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def chown_tree(self, path: Path) -> None:
        if self.uid is None:
            return
        self.chown(path)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.uid, self.gid or -1)


def parent_death_preexec(
    user: OsUser,
    *,
    before: Callable[[], None] | None = None,
    death_signal: signal.Signals = signal.SIGKILL,
) -> Callable[[], None]:
    """A ``preexec_fn``: drop privileges, then ask for ``death_signal`` when our parent dies.

    SIGKILL suits a tool; a postmaster gets SIGQUIT (``POSTMASTER_DEATH_SIGNAL``): its
    immediate shutdown takes every backend down with it, where a SIGKILLed postmaster
    leaves them running (a busy one never notices its postmaster is gone).

    The order matters: Linux clears the parent-death signal when credentials change,
    so ``prctl(PR_SET_PDEATHSIG)`` must come after ``setuid``. ``before`` runs first, still
    with our privileges (e.g. joining a cgroup, which needs root).
    """
    parent = os.getpid()
    groups: list[int] = []
    if user.uid is not None and user.gid is not None:
        groups = [g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem]
        groups.append(user.gid)

    def preexec() -> None:
        if before is not None:
            before()
        os.setpgrp()  # terminal signals go to compute_ctl, which forwards them
        if user.uid is not None and user.gid is not None:
            os.setgroups(groups)
            os.setgid(user.gid)
            os.setuid(user.uid)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def find_pgbin(pgbin: str) -> Path:
    """Resolve ``-b/--pgbin`` (a path or a name on PATH) to the postgres binary.

    Falls back to Debian's newest ``/usr/lib/postgresql/*/bin/postgres`` when the name
    is the default ``postgres`` and it is not on PATH.
    """
    candidate = Path(pgbin)
    if candidate.is_absolute() or "/" in pgbin:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
        raise errors.ConfigError(f"postgres binary {pgbin!r} not found or not executable")
    found = shutil.which(pgbin)
    if found:
        return Path(found).resolve()
    if pgbin == "postgres" and _DEBIAN_PG_ROOT.is_dir():
        versions = sorted(
            (p for p in _DEBIAN_PG_ROOT.iterdir() if (p / "bin" / "postgres").is_file()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin" / "postgres"
    raise errors.ConfigError(f"postgres binary {pgbin!r} not found on PATH")


@dataclasses.dataclass(frozen=True)
class PgTools:
    """The PostgreSQL binaries beside ``postgres`` and the user that runs them."""

    postgres: Path
    user: OsUser

    @property
    def bindir(self) -> Path:
        return self.postgres.parent

    def tool(self, name: str) -> Path:
        path = self.bindir / name
        if not path.is_file():
            raise errors.ConfigError(f"{name} not found beside {self.postgres}")
        return path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PG", "NEON_")) and k not in ("HOME", "USER", "LOGNAME")
        }
        env.update(HOME=self.user.home, USER=self.user.name, LOGNAME=self.user.name)
        env.setdefault("LC_ALL", "C.UTF-8")
        if extra:
            env.update(extra)
        return env

    def _workdir(self) -> str:
        return self.user.home if os.path.isdir(self.user.home) else "/"

    async def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
        preexec: Callable[[], None] | None = None,
        death_signal: signal.Signals = signal.SIGKILL,
    ) -> asyncio.subprocess.Process:
        """Start a PostgreSQL tool as the OS user, tied to our lifetime.

        ``preexec`` runs in the child before the privilege drop (see ``parent_death_preexec``);
        ``death_signal`` is what the child gets when compute_ctl dies.
        """
        return await asyncio.create_subprocess_exec(
            *[os.fspath(a) for a in argv],
            env=self.env(env),
            cwd=cwd or self._workdir(),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=parent_death_preexec(self.user, before=preexec, death_signal=death_signal),
        )

    async def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        input_bytes: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """Run a tool to completion; raise ``PostgresError`` with its stderr on failure."""
        proc = await self.spawn(
            argv,
            env=env,
            stdin=asyncio.subprocess.PIPE
            if input_bytes is not None
            else asyncio.subprocess.DEVNULL,
        )
        try:
            out, err = await proc.communicate(input_bytes)
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            name = Path(os.fspath(argv[0])).name
            text = err.decode(errors="replace").strip()[-2000:]
            raise errors.PostgresError(f"{name} exited with code {proc.returncode}: {text}")
        return out, err
