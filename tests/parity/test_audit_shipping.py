"""The audit shipping's edges (``compute.audit_ship``): Neon's endpoint choice and its error,
the rendered drop-in, the restart of a named rsyslogd only, the deletion of audit files
after 15 minutes (Neon's ``find -mmin +15``) and a start that fails without an endpoint.
The shipping itself, through a real rsyslogd to a loopback receiver, is in
``test_audit.py``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from compute_ctl.compute import audit, audit_ship, node, state
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers

S = state.ComputeStatus


def test_the_tls_endpoint_wins_and_neither_is_an_error() -> None:
    assert audit_ship.target(plain="127.0.0.1:514", tls="") == audit_ship.Target(
        host="127.0.0.1", port=514, tls=False
    )
    assert audit_ship.target(plain="127.0.0.1:514", tls="[::1]:6514") == audit_ship.Target(
        host="::1", port=6514, tls=True
    )
    with pytest.raises(audit_ship.ShippingError, match=r"^AUDIT_LOGGING_ENDPOINT and AUDIT_"):
        audit_ship.target(plain="", tls="")
    for bad in ("nohost", "host:0", ":514", 'a"b:514'):
        with pytest.raises(audit_ship.ShippingError, match="AUDIT_LOGGING_ENDPOINT"):
            audit_ship.target(plain=bad, tls="")


def _render(to: audit_ship.Target, *, endpoint_id: str = "", project_id: str = "") -> str:
    return audit_ship.render(
        log_directory=Path("/pgdata/log"),
        work_directory=Path("/var/lib/rs"),
        endpoint_id=endpoint_id,
        project_id=project_id,
        to=to,
    )


def test_the_drop_in_forwards_only_its_own_input() -> None:
    text = _render(
        audit_ship.Target(host="logs.example", port=6514, tls=True),
        endpoint_id='ep-"x"',
        project_id="prj\\1",
    )
    assert 'File="/pgdata/log/*.log"' in text
    assert 'Tag="pgaudit_log" Severity="info" Facility="local5" ruleset="compute_audit"' in text
    assert 'global(workDirectory="/var/lib/rs")' in text
    assert 'set $.json_log!endpoint_id = "ep-\\"x\\"";' in text
    assert 'set $.json_log!project_id = "prj\\\\1";' in text
    assert 'StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"' in text
    assert 'target="logs.example" port="6514" protocol="tcp"' in text
    plain = _render(audit_ship.Target(host="127.0.0.1", port=514, tls=False))
    assert "gtls" not in plain
    # No catch-all selector: only the ruleset bound to the imfile input forwards.
    assert "local5.info" not in plain


async def test_only_the_named_rsyslogd_is_restarted(tmp_path: Path) -> None:
    pid_file = tmp_path / "rsyslogd.pid"
    with pytest.raises(audit_ship.ShippingError, match="rsyslogd is not running"):
        await audit_ship.restart_rsyslogd(pid_file)
    # A process that nobody brings back: it is stopped, and the restart fails in time.
    proc = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        pid_file.write_text(f"{proc.pid}\n")
        with pytest.raises(audit_ship.ShippingError, match=r"did not come back within 0\.3 s"):
            await audit_ship.restart_rsyslogd(pid_file, timeout=0.3)
        assert await asyncio.wait_for(proc.wait(), 10) < 0  # it got SIGTERM
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_audit_files_older_than_15_minutes_are_deleted(tmp_path: Path) -> None:
    pgdata = tmp_path
    log = pgdata / "log"
    log.mkdir()
    old_audit, new_audit, old_other = log / "audit-1.log", log / "audit-2.log", log / "pg.log"
    for path in (old_audit, new_audit, old_other):
        path.write_text("x" * 10)
    past = time.time() - audit_ship.GC_AGE_SECONDS - 60
    for path in (old_audit, old_other):
        os.utime(path, (past, past))
    recent = time.time() - audit_ship.GC_AGE_SECONDS + 60
    os.utime(new_audit, (recent, recent))

    metrics = metrics_mod.Metrics(build_tag="t", state=state.ComputeState())
    task = asyncio.create_task(audit.watch_log_dir(pgdata=pgdata, metrics=metrics))
    try:
        await helpers.wait_until(lambda: not old_audit.exists(), what="the old audit file gone")
        await helpers.wait_until(
            lambda: metrics.registry.get_sample_value("compute_audit_log_dir_size") == 20
        )
    finally:
        task.cancel()
    assert new_audit.exists()
    assert old_other.exists()


@pytest.mark.postgres
async def test_a_file_writing_level_without_an_endpoint_fails_the_start(
    scratch: Path, tmp_path: Path
) -> None:
    port = pgserver.free_port()
    raw = helpers.spec_json(port=port)
    raw["audit_log_level"] = "Extended"
    n = node.ComputeNode(
        helpers.make_params(
            pgdata=scratch / "pgdata",
            port=port,
            audit_shipping=audit_ship.Settings(conf_dir=tmp_path, pid_file=tmp_path / "none.pid"),
        ),
        config=spec_mod.ComputeConfig.model_validate({"spec": raw}),
    )
    async with helpers.run_node(n, until=S.FAILED):
        assert "AUDIT_LOGGING_ENDPOINT and AUDIT_LOGGING_TLS_ENDPOINT are both empty" in str(
            n.state.error
        )
        assert n.postmaster is None  # failed before postgres started, as Neon's
        assert not (tmp_path / audit_ship.CONF_NAME).exists()
