"""A compute's PGDATA for storage tests: the conf node would write, then real postgres.

Stands in for the node until the storage path is wired into it: an empty PGDATA
owned by the OS user, a ``postgresql.conf`` with the storage and mode lines, and a
``pgserver.PgServer`` started on whatever ``storage.prepare`` put there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import storage
from tests import pgserver

__all__ = ["Compute"]


@dataclasses.dataclass
class Compute:
    pgdata: Path
    port: int
    server: pgserver.PgServer | None = None

    @classmethod
    def create(cls) -> Compute:
        base = pgserver.scratch_dir("compute-")
        pgdata = base / "data"
        pgdata.mkdir(mode=0o700)
        pgserver.tools().user.chown(pgdata)
        return cls(pgdata=pgdata, port=pgserver.free_port())

    def write_conf(self, spec: spec_mod.ComputeSpec) -> None:
        lines = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.pgdata.parent}'",
            "fsync = off",
            *storage.neon_conf_lines(spec),
            *_mode_lines(spec),
        ]
        conf = self.pgdata / "postgresql.conf"
        conf.write_text("\n".join(lines) + "\n")
        pgserver.tools().user.chown(conf)

    async def start(self) -> pgserver.PgServer:
        self.server = pgserver.PgServer(datadir=self.pgdata, port=self.port)
        await asyncio.to_thread(self.server.start)
        return self.server

    def dsn(self) -> str:
        return f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{self.port}/postgres"

    async def stop(self) -> None:
        """Fast shutdown; PGDATA stays (final_lsn runs after this)."""
        server = self.server
        if server is not None and server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(2)
            await asyncio.to_thread(server.proc.wait, 30)

    def remove(self) -> None:
        proc = self.server.proc if self.server is not None else None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


def _mode_lines(spec: spec_mod.ComputeSpec) -> list[str]:
    """The mode's settings, as ``pgconf`` writes them for a real compute."""
    lines = [f"neon.compute_mode={spec.mode.type_name}"] if spec.has_neon_storage() else []
    if spec.mode.kind == "Static":
        lines += ["hot_standby=on", f"recovery_target_lsn='{spec.mode.lsn}'"]
    elif spec.mode.kind == "Replica":
        lines.append("hot_standby=on")
    return lines
