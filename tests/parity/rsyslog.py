"""A private rsyslogd under a supervisor, and a loopback syslog receiver, for the audit
shipping tests.

The rsyslogd runs with its own main config (which only includes the drop-in directory
compute_ctl writes to), pid file and work directory, so the host's ``/etc/rsyslog.conf``
and any system rsyslogd are never touched. It loads no input but the drop-in's ``imfile``
(no ``/dev/log``). The supervisor restarts it whenever it exits, as the one in Neon's VM
image does after compute_ctl stops it to load a new configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from compute_ctl.compute import audit_ship
from tests import pgserver

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def available() -> bool:
    return Path(RSYSLOGD).exists()


@dataclasses.dataclass
class Receiver:
    """A TCP syslog receiver on loopback (one message per line: rsyslog's framing)."""

    port: int
    lines: list[str] = dataclasses.field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
        writer.close()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver(port=pgserver.free_port())
    server = await asyncio.start_server(recv.handle, "127.0.0.1", recv.port)
    try:
        yield recv
    finally:
        server.close()
        await server.wait_closed()


@dataclasses.dataclass
class Supervised:
    """The private rsyslogd's paths and the pids it has had so far."""

    root: Path
    pids: list[int] = dataclasses.field(default_factory=list)

    @property
    def conf_dir(self) -> Path:
        return self.root / "rsyslog.d"

    @property
    def pid_file(self) -> Path:
        return self.root / "rsyslogd.pid"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    def settings(self, *, endpoint: str) -> audit_ship.Settings:
        return audit_ship.Settings(
            endpoint=endpoint,
            conf_dir=self.conf_dir,
            pid_file=self.pid_file,
            work_directory=self.work_dir,
            restart_timeout=30.0,  # a loaded test machine may take longer than Neon's 5 s
        )


async def _supervise(sup: Supervised, main_conf: Path, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        proc = await asyncio.create_subprocess_exec(
            RSYSLOGD,
            "-n",
            "-f",
            str(main_conf),
            "-i",
            str(sup.pid_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        sup.pids.append(proc.pid)
        try:
            if await proc.wait() != 0:
                await asyncio.sleep(0.5)  # a failing config: do not spin
        finally:
            if proc.returncode is None:  # the test ended: stop this one, by its pid
                proc.terminate()
                await proc.wait()


@contextlib.asynccontextmanager
async def supervised(root: Path) -> AsyncIterator[Supervised]:
    """rsyslogd under a restart loop until the context ends; yields once its pid file names
    a live process."""
    sup = Supervised(root=root)
    sup.conf_dir.mkdir(parents=True)
    sup.work_dir.mkdir()
    main_conf = root / "rsyslog.conf"
    # rsyslogd refuses to run without an action: its own messages go to a file of ours.
    main_conf.write_text(
        f'include(file="{sup.conf_dir}/*.conf" mode="optional")\n'
        f'syslog.* action(type="omfile" file="{root}/rsyslogd.log")\n'
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(_supervise(sup, main_conf, stopping))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while audit_ship.read_pid(sup.pid_file) is None:
            assert not task.done(), "the rsyslogd supervisor stopped"
            assert loop.time() < deadline, "rsyslogd did not write its pid file"
            await asyncio.sleep(0.05)
        yield sup
    finally:
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
