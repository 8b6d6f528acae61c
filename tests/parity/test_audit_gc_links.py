"""The audit garbage collection deletes only files inside ``<pgdata>/log``.

PGDATA belongs to the postgres OS user; compute_ctl deletes as root. A ``log`` (or a
directory below it) replaced by a link must not make root delete ``audit*.log`` files
elsewhere (``/var/log/audit/audit.log``, say).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from compute_ctl.compute import audit, audit_ship


def _old(path: Path) -> Path:
    path.write_text("x")
    past = time.time() - audit_ship.GC_AGE_SECONDS - 60
    os.utime(path, (past, past))
    return path


def test_a_linked_log_directory_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = _old(elsewhere / "audit.log")
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "log").symlink_to(elsewhere)
    assert audit_ship.collect_garbage(pgdata / "log") == []
    assert outside.exists()


def test_links_below_the_log_directory_are_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = _old(elsewhere / "audit.log")
    log = tmp_path / "pgdata" / "log"
    (log / "sub").mkdir(parents=True)
    (log / "linked").symlink_to(elsewhere)
    (log / "audit-link.log").symlink_to(outside)
    inside = _old(log / "sub" / "audit-1.log")
    assert audit_ship.collect_garbage(log) == [inside]
    assert outside.exists()
    assert not inside.exists()


def test_the_size_gauge_counts_no_file_through_a_link(tmp_path: Path) -> None:
    """``compute_audit_log_dir_size`` must not tell the size of files root can read
    elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "big.log").write_bytes(b"x" * 1000)
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "log").symlink_to(elsewhere)
    assert audit.log_dir_size(pgdata) == 0
    other = tmp_path / "other"
    (other / "log").mkdir(parents=True)
    (other / "log" / "pg.log").write_bytes(b"y" * 10)
    (other / "log" / "linked.log").symlink_to(elsewhere / "big.log")
    assert audit.log_dir_size(other) == 10
