"""A stand-in for Neon's postgres fork: real PostgreSQL, plus a fake sync-safekeepers.

``NeonBin.create()`` makes a bin directory holding a ``postgres`` wrapper and
symlinks to every other real PostgreSQL tool. The wrapper sends
``--sync-safekeepers`` to ``fake_sync_safekeepers`` (beside this file) and execs the
real postgres for anything else, so compute_ctl can be pointed at it with ``-b``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from tests import pgserver

__all__ = ["FAKE_SYNC", "NeonBin"]

FAKE_SYNC = Path(__file__).with_name("fake_sync_safekeepers")


def _interpreter() -> str:
    """A Python the postgres user can run (the venv's and pyenv's may sit under /root)."""
    system = Path("/usr/bin/python3")
    return str(system) if system.exists() else str(Path(sys.executable).resolve())


@dataclasses.dataclass
class NeonBin:
    bindir: Path
    state: Path

    @property
    def postgres(self) -> Path:
        return self.bindir / "postgres"

    @classmethod
    def create(cls, *, lsn: str = "0/169AD58", fail: int = 0) -> NeonBin:
        tools = pgserver.tools()
        base = pgserver.scratch_dir("neonbin-")
        bindir = base / "bin"
        bindir.mkdir()
        for tool in tools.bindir.iterdir():
            if tool.name != "postgres":
                (bindir / tool.name).symlink_to(tool)
        state = base / "sync-state.json"
        wrapper = bindir / "postgres"
        fake = [_interpreter(), "-S", str(FAKE_SYNC)]
        wrapper.write_text(
            "#!/bin/sh\n"
            "# TEST STAND-IN for Neon's postgres fork (see tests/storage/neonbin.py)\n"
            'if [ "$1" = "--sync-safekeepers" ]; then\n'
            f'  exec {shlex.join(fake)} "$@" --state {shlex.quote(str(state))}\n'
            "fi\n"
            f'exec {shlex.quote(str(tools.postgres))} "$@"\n'
        )
        wrapper.chmod(0o755)
        neon = cls(bindir=bindir, state=state)
        neon.configure(lsn=lsn, fail=fail)
        return neon

    def configure(self, *, lsn: str, fail: int = 0) -> None:
        self.state.write_text(json.dumps({"lsn": lsn, "fail": fail}))
        pgserver.tools().user.chown(self.state)
        calls = Path(f"{self.state}.calls")
        calls.touch()
        pgserver.tools().user.chown(calls)

    def calls(self) -> list[dict[str, Any]]:
        path = Path(f"{self.state}.calls")
        return [json.loads(line) for line in path.read_text().splitlines() if line]
