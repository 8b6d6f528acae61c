"""A throwaway vanilla PostgreSQL for tests: initdb, start, connect, stop.

Runs the real Debian binaries as the unprivileged OS user when the suite runs as root
(through ``pgtools.parent_death_preexec``), listens on a free loopback port with trust
authentication, and is torn down by the fixture that made it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from compute_ctl.compute import pgtools

__all__ = ["PgServer", "free_port", "scratch_dir", "tools"]

SUPERUSER = "cloud_admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
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
    path.chmod(0o755)
    tools().user.chown(path)
    return path


@dataclasses.dataclass
class PgServer:
    """One running postmaster. ``dsn(db)`` connects as the superuser over TCP."""

    datadir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, *, extra_conf: str = "") -> PgServer:
        t = tools()
        base = scratch_dir("pg-")
        datadir = base / "data"
        run_as = pgtools.parent_death_preexec(t.user)
        subprocess.run(
            [
                t.tool("initdb"),
                "-D",
                datadir,
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
            preexec_fn=run_as,
            env=t.env(),
        )
        port = free_port()
        with open(datadir / "postgresql.conf", "a") as f:
            f.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\nfsync = off\n"
                "max_connections = 100\nshared_preload_libraries = 'pg_stat_statements'\n"
                f"{extra_conf}\n"
            )
        server = cls(datadir=datadir, port=port)
        server.start()
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
