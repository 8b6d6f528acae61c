"""A throwaway vanilla PostgreSQL for tests: initdb, start, connect, stop.

Runs the real Debian binaries as the unprivileged OS user when the suite runs as root
(through ``pgtools.parent_death_preexec``), listens on a free loopback port with trust
authentication, and is torn down by the fixture that made it.

``scratch_dir`` makes the directories postgres can reach; whoever makes one removes it,
also when the test fails. ``leftovers()`` lists those that were not removed: the suite
reports (and then removes) them at its end.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from compute_ctl.compute import pgtools

__all__ = [
    "PgServer",
    "die_with_parent",
    "free_port",
    "leftovers",
    "scratch",
    "scratch_dir",
    "tools",
]

SUPERUSER = "cloud_admin"

# Every scratch directory this process made, for the suite's end-of-session check.
_made: list[Path] = []
_PR_SET_PDEATHSIG = 1


_handed_out: collections.deque[int] = collections.deque(maxlen=256)


def free_port() -> int:
    """A loopback port free now, and not one of the last ports this process handed out:
    the kernel may give the same ephemeral port to two calls in a row when nothing has
    bound it in between (seen: a compute's internal and external ports were equal)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.append(port)
            return port


def tools() -> pgtools.PgTools:
    return pgtools.PgTools(
        postgres=pgtools.find_pgbin(os.environ.get("POSTGRES_PATH", "postgres")),
        user=pgtools.OsUser.resolve(os.environ.get("COMPUTE_CTL_OS_USER", "postgres")),
    )


def scratch_dir(prefix: str) -> Path:
    """A directory the PostgreSQL OS user can reach (pytest's tmp_path is root-only)."""
    base = Path(tempfile.gettempdir()) / "compute-ctl-tests"
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    _made.append(path)
    path.chmod(0o755)
    tools().user.chown(path)
    return path


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """``scratch_dir(prefix)``, removed when the context exits."""
    path = scratch_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for a process a test starts (compute_ctl): SIGKILL it when the
    thread that started it dies, so it cannot outlive an interrupted suite. Its postgres
    follows it the same way (``pgtools.parent_death_preexec``)."""
    parent = os.getpid()

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def leftovers() -> list[Path]:
    """The scratch directories this process made that its code did not remove."""
    return [path for path in _made if path.exists()]


@dataclasses.dataclass
class PgServer:
    """One running postmaster. ``dsn(db)`` connects as the superuser over TCP."""

    datadir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, *, extra_conf: str = "") -> PgServer:
        """initdb and start one; on any failure nothing is left running or on disk."""
        t = tools()
        base = scratch_dir("pg-")
        server = cls(datadir=base / "data", port=0)
        try:
            subprocess.run(
                [
                    t.tool("initdb"),
                    "-D",
                    server.datadir,
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                preexec_fn=pgtools.parent_death_preexec(t.user),
                env=t.env(),
            )
            server.port = free_port()  # as late as possible: another process may take it
            with open(server.datadir / "postgresql.conf", "a") as f:
                f.write(
                    f"port = {server.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{base}'\nfsync = off\n"
                    "max_connections = 100\nshared_preload_libraries = 'pg_stat_statements'\n"
                    f"{extra_conf}\n"
                )
            server.start()
        except BaseException:
            server.stop()
            raise
        return server

    def start(self) -> None:
        t = tools()
        log = open(self.datadir.parent / "postgres.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [t.postgres, "-D", self.datadir],
            stdout=log,
            stderr=log,
            preexec_fn=pgtools.parent_death_preexec(t.user),
            env=t.env(),
        )
        log.close()
        deadline = time.monotonic() + 30
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_tail()}")
            try:
                if pidfile.read_text().rstrip("\n").split("\n")[-1].strip() == "ready":
                    return
            except (FileNotFoundError, IndexError):
                pass
            time.sleep(0.02)
        self.proc.kill()  # not ready in time: leave nothing running
        self.proc.wait()
        raise TimeoutError(f"postgres not ready: {self.log_tail()}")

    def log_tail(self, limit: int | None = 2000) -> str:
        try:
            text = (self.datadir.parent / "postgres.log").read_text()
            return text if limit is None else text[-limit:]
        except FileNotFoundError:
            return ""

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


@contextlib.contextmanager
def running(*, extra_conf: str = "") -> Iterator[PgServer]:
    """A started ``PgServer``, stopped and removed on exit (the body of most fixtures)."""
    server = PgServer.create(extra_conf=extra_conf)
    try:
        yield server
    finally:
        server.stop()
