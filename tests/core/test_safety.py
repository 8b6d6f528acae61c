"""Issue 12, privilege and data safety, against real compute_ctl processes and PostgreSQL:
links planted in PGDATA by the postgres OS user, a hostile PG_VERSION, two compute_ctl on
one PGDATA, backends outliving a SIGKILLed compute_ctl, a postmaster.pid whose shared
memory is still attached, and leftover temp files."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from compute_ctl.compute import pgtools
from tests import pgserver
from tests.core import helpers
from tests.support import compute_process as process
from tests.support.compute_process import ComputeProcess

pytestmark = pytest.mark.postgres

SECRET = "TOPSECRET-root-only-line"
# A CPU-bound statement: it never waits on a latch, so it never notices that its
# postmaster died (pg_sleep would). Bounded, so a failing test leaves nothing for long.
BUSY = (
    "do $$ declare t timestamptz := clock_timestamp(); begin "
    "while clock_timestamp() < t + interval '60 s' loop end loop; end $$"
)


def _superuser_tcp(port: int) -> str:
    return f"postgresql://{helpers.SUPERUSER}@127.0.0.1:{port}/postgres"


def _as_postgres(*argv: str) -> None:
    """Run a command as the OS user postgres runs as (the attacker of these tests)."""
    user = pgserver.tools().user
    subprocess.run(argv, check=True, preexec_fn=pgtools.parent_death_preexec(user))


def _victim(directory: Path, name: str) -> tuple[Path, tuple[int, int, int, bytes]]:
    """A root-owned file outside PGDATA, and what must stay true of it."""
    path = directory / name
    path.write_text(f"{SECRET}\nroot's own file\n")
    path.chmod(0o644)
    return path, _fingerprint(path)


def _fingerprint(path: Path) -> tuple[int, int, int, bytes]:
    st = path.stat()
    return st.st_uid, st.st_gid, st.st_mode, path.read_bytes()


def _start(
    procs: list[ComputeProcess], scratch: Path, *args: str, port: int | None = None
) -> tuple[ComputeProcess, int]:
    """compute_ctl on ``scratch/pgdata`` with a spec on ``port`` (a free one by default)."""
    port = port or pgserver.free_port()
    config = process.write_config(scratch / f"{port}.json", helpers.spec_json(port=port))
    proc = ComputeProcess(pgdata=scratch / "pgdata", port=port, config=config, args=args)
    procs.append(proc)
    return proc, port


def test_links_in_pgdata_never_make_root_write_outside_it(
    scratch: Path, tmp_path: Path, procs: list[ComputeProcess]
) -> None:
    pgdata = scratch / "pgdata"
    first, port = _start(procs, scratch, "--keep-pgdata")
    first.wait_status("running")

    # /configure: postgresql.conf is written through its temp file (old and new names).
    conf_victim, conf_before = _victim(tmp_path, "conf-victim")
    for name in (".postgresql.conf.tmp", ".postgresql.conf.compute_ctl.tmp"):
        _as_postgres("ln", "-s", str(conf_victim), str(pgdata / name))
    spec = helpers.spec_json(port=port)
    spec["cluster"]["settings"].append({"name": "work_mem", "value": "5MB", "vartype": "string"})
    code, body = first.request("POST", "/configure", {"spec": spec})
    assert code == 200, body
    assert _fingerprint(conf_victim) == conf_before
    conf = pgdata / "postgresql.conf"
    assert not conf.is_symlink()
    assert "work_mem = '5MB'" in conf.read_text()
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    # A --keep-pgdata start writes postgresql.conf, pg_hba.conf and the override file.
    start_victim, start_before = _victim(tmp_path, "start-victim")
    for name in (
        ".postgresql.conf.tmp",
        ".pg_hba.conf.tmp",
        ".pg_hba.conf.compute_ctl.tmp",
        ".compute_ctl_temp_override.conf.compute_ctl.tmp",
    ):
        (pgdata / name).unlink(missing_ok=True)
        _as_postgres("ln", "-s", str(start_victim), str(pgdata / name))
    (pgdata / "compute_ctl_temp_override.conf").unlink()
    # Item 13: a temp file a failed write left behind (this one no later write replaces),
    # and the directory of a CREATE DATABASE a crash interrupted (no pg_database row).
    _as_postgres("touch", str(pgdata / ".compute_ctl_temp_override.conf.tmp"))
    orphan = pgdata / "base" / "987654"
    _as_postgres("mkdir", str(orphan))
    _as_postgres("touch", "-d", "2020-01-01", str(orphan / "1259"), str(orphan))
    second, _ = _start(procs, scratch, "--keep-pgdata", "--trust-superuser-on-loopback", port=port)
    second.wait_status("running")
    with psycopg.connect(_superuser_tcp(port)) as conn:  # item 6: Neon's trust, on request
        assert conn.execute("select current_user").fetchone() == (helpers.SUPERUSER,)
    assert _fingerprint(start_victim) == start_before
    assert _fingerprint(conf_victim) == conf_before
    leftovers = sorted(p.name for p in pgdata.iterdir() if p.name.endswith(".tmp"))
    assert leftovers == []
    assert not orphan.exists()
    with psycopg.connect(helpers.role_dsn(port)) as conn:  # a real database's dir stays
        row = conn.execute("select oid from pg_database where datname = 'appdb'").fetchone()
    assert row is not None
    assert (pgdata / "base" / str(row[0])).is_dir()
    assert not (pgdata / "pg_hba.conf").is_symlink()
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0

    # Item 2: PG_VERSION linked to a root-only file is neither followed nor echoed.
    secret_dir = tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    secret, _ = _victim(secret_dir, "secret")
    secret.chmod(0o600)
    (pgdata / "PG_VERSION").unlink()
    _as_postgres("ln", "-s", str(secret), str(pgdata / "PG_VERSION"))
    third, _ = _start(procs, scratch, "--keep-pgdata", port=port)
    assert third.wait_exit() == 2
    log = third.log()
    assert "PG_VERSION is not a plain version file" in log
    assert SECRET not in log
    assert (pgdata / "global" / "pg_control").is_file()  # nothing was wiped


def test_second_compute_ctl_on_the_same_pgdata_exits_2_and_wipes_nothing(
    scratch: Path, procs: list[ComputeProcess]
) -> None:
    first, port = _start(procs, scratch)
    first.wait_status("running")
    with psycopg.connect(helpers.role_dsn(port)) as conn:
        conn.execute("create table precious (v int)")
        conn.execute("insert into precious select generate_series(1, 100)")

    # Item 6: by default the superuser is trusted over the 0700 socket directory only.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_superuser_tcp(port)).close()
    socket = make_conninfo(
        host=str(scratch / "pgdata"), port=port, user=helpers.SUPERUSER, dbname="postgres"
    )
    with psycopg.connect(socket) as conn:
        assert conn.execute("select current_user").fetchone() == (helpers.SUPERUSER,)

    second, _ = _start(procs, scratch)  # other ports, no --keep-pgdata
    assert second.wait_exit(timeout=60) == 2
    assert "in use by another compute_ctl" in second.log()

    status = first.status()
    assert status is not None
    assert status["status"] == "running"
    with psycopg.connect(helpers.role_dsn(port)) as conn:
        assert conn.execute("select count(*) from precious").fetchone() == (100,)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0


def _busy_backend(port: int) -> tuple[threading.Thread, list[BaseException]]:
    """A backend in a long CPU-bound statement, started from a thread; waits until it runs."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(helpers.role_dsn(port), autocommit=True) as conn:
                conn.execute(BUSY)
        except psycopg.Error as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def running() -> bool:
        with psycopg.connect(helpers.role_dsn(port), autocommit=True) as conn:
            row = conn.execute(
                "select count(*) from pg_stat_activity where state = 'active' "
                "and query like 'do $$%%'"
            ).fetchone()
        return row == (1,)

    helpers.wait_until_sync(running, timeout=30, what="the busy backend")
    return thread, errors


def test_sigkilled_compute_ctl_takes_busy_backends_down(
    scratch: Path, procs: list[ComputeProcess]
) -> None:
    proc, port = _start(procs, scratch)
    proc.wait_status("running")
    thread, errors = _busy_backend(port)

    proc.signal(signal.SIGKILL)
    proc.wait_exit()
    proc.wait_no_postgres(timeout=15)
    thread.join(timeout=15)
    assert errors, "the busy statement should have been cut"


def test_keep_pgdata_restart_keeps_postmaster_pid_while_shared_memory_is_attached(
    scratch: Path, procs: list[ComputeProcess]
) -> None:
    pgdata = scratch / "pgdata"
    first, port = _start(procs, scratch, "--keep-pgdata")
    first.wait_status("running")
    _busy_backend(port)
    pidfile = pgdata / "postmaster.pid"
    # The postmaster dies; its busy backend lives on with the shared memory attached.
    os.kill(first.postmaster_pid(), signal.SIGKILL)
    first.signal(signal.SIGKILL)
    first.wait_exit()
    assert helpers.processes_in(pgdata), "the busy backend should outlive its postmaster"
    before = pidfile.read_bytes()

    second, _ = _start(procs, scratch, "--keep-pgdata", port=port)
    assert second.wait_exit(timeout=60) != 0
    assert "shared memory attached" in second.log()
    assert pidfile.read_bytes() == before
