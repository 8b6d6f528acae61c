"""A full disk is a transient fault too (issue 12, item 12).

PGDATA lives on a small tmpfs mounted by the test (root only). The disk is filled but for
1 MiB, a ``/configure`` that needs space (a new database) fails with 500 naming the phase,
the database and the cause (SQLSTATE 53100), and the
compute stays ``running`` on its last applied spec with ``pending_error`` set. Once space
is freed, the configurator's retry applies the desired spec without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from compute_ctl.compute import errors, node, state
from compute_ctl.compute.http import translate
from tests import pgserver
from tests.core import helpers

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]
S = state.ComputeStatus
_CHUNK = 1 << 20


@contextlib.contextmanager
def small_disk(size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB, unmounted and removed on exit."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = pgserver.scratch_dir("core-disk-")
    mount = base / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; the bytes written."""
    written = 0
    block = b"\0" * _CHUNK
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return written


async def test_full_disk_is_retried_until_space_returns() -> None:
    port = pgserver.free_port()
    with small_disk(160) as disk:
        n = node.ComputeNode(
            helpers.make_params(
                pgdata=disk / "pgdata",
                port=port,
                apply_timeout=10.0,
                resync_interval=3600,
                trust_superuser_on_loopback=True,  # the test connects over TCP
            ),
            config=helpers.config(helpers.spec_json(port=port)),
        )
        async with helpers.run_node(n):
            admin = f"postgresql://{helpers.SUPERUSER}@127.0.0.1:{port}/postgres"
            assert n.postmaster is not None
            pid = n.postmaster.pid
            applied = n.state.applied_hash
            # The start's background migrations write WAL: let them finish first, or they
            # may take the last MiB (postgres then stops on a WAL write, not CREATE DATABASE).
            await helpers.migrations_done(n)
            filler = disk / "filler"
            written = fill(filler)
            # Leave 1 MiB: postgresql.conf is rewritten, CREATE DATABASE (~8 MiB) is not.
            os.truncate(filler, written - _CHUNK)
            body = helpers.spec_json(
                port=port, databases=[("appdb", "app_owner"), ("needs_space", "app_owner")]
            )
            with pytest.raises(errors.ComputeError) as failed:
                await n.configure(helpers.config(body))
            answer = translate.status_and_message(failed.value)
            assert answer is not None
            assert answer[0] == 500
            message = str(failed.value)
            assert "needs_space" in message  # the object
            assert "53100" in message  # disk_full, the cause
            assert n.state.status is not S.FAILED
            assert n.state.pending_error is not None
            assert n.state.applied_hash == applied

            filler.unlink()  # space is back: the retry applies the desired spec
            s = n.state
            await helpers.wait_until(
                lambda: (
                    s.status is S.RUNNING
                    and s.applied_hash == s.desired_hash
                    and s.pending_error is None
                ),
                timeout=60,
                what="the desired spec to apply once space returned",
            )
            assert n.postmaster is not None
            assert n.postmaster.pid == pid  # no restart by compute_ctl
            async with await psycopg.AsyncConnection.connect(admin) as conn:
                cur = await conn.execute("select 1 from pg_database where datname = 'needs_space'")
                assert await cur.fetchone() == (1,)
