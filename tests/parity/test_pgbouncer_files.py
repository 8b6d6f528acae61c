"""pgbouncer's files as another local user may have prepared them (review findings).

Neon's pid file is ``/tmp/pgbouncer.pid``: any local user can create it while pgbouncer
is not running. A FIFO there (or in place of the ini) must not hang compute_ctl's
termination or its configure runs: every read is non-blocking and of a regular file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from compute_ctl.compute import pgbouncer


def _finishes(work: Callable[[], object], fifo: Path) -> list[object]:
    """Run ``work`` in a thread; fail (after unblocking it) if it blocks on ``fifo``."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"blocked on the FIFO {fifo}")
    return outcome


def test_a_fifo_pid_file_does_not_hang_the_kill(tmp_path: Path) -> None:
    pid = tmp_path / "pgbouncer.pid"
    os.mkfifo(pid)
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(f"[pgbouncer]\npidfile = {pid}\n")
    assert _finishes(lambda: pgbouncer.kill(ini), pid) == [None]


def test_a_fifo_ini_does_not_hang_the_kill_or_the_rewrite(tmp_path: Path) -> None:
    ini = tmp_path / "pgbouncer.ini"
    os.mkfifo(ini)
    assert _finishes(lambda: pgbouncer.pidfile_of(ini), ini) == [pgbouncer.DEFAULT_PIDFILE]
    [outcome] = _finishes(lambda: pgbouncer.rewrite_ini(ini, {"max_client_conn": "10"}), ini)
    assert isinstance(outcome, pgbouncer.PgbouncerError)
