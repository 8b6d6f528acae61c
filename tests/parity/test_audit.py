"""Audit logging with the real ``pgaudit`` (and ``pgauditlogtofile`` for the levels that
write files): the conf block, the SQL steps, the ``postgres`` database excluded, and audit
lines for a user's DDL (in the server log for Base, in ``<pgdata>/log/audit-*.log`` for
Full, with statement parameters, shipped by a private rsyslogd to a loopback receiver)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from compute_ctl.compute import audit, audit_ship, node, state
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers
from tests.parity import rsyslog

pytestmark = pytest.mark.postgres
S = state.ComputeStatus


def _have(library: str) -> bool:
    return (Path(pgserver.tools().postgres).parent.parent / "lib" / f"{library}.so").exists()


needs_pgaudit = pytest.mark.skipif(
    not (_have("pgaudit") and _have("pgauditlogtofile")),
    reason="postgresql-15-pgaudit / -pgauditlogtofile not installed (scripts/setup)",
)


async def _rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


@contextlib.asynccontextmanager
async def _started(
    scratch: Path, level: str, **params: Any
) -> AsyncIterator[tuple[node.ComputeNode, int]]:
    port = pgserver.free_port()
    raw = helpers.spec_json(
        port=port, settings=[("shared_preload_libraries", "pg_stat_statements", "string")]
    )
    raw["audit_log_level"] = level
    raw["endpoint_id"], raw["project_id"] = "ep-audit-1", "prj-audit-1"
    n = node.ComputeNode(
        helpers.make_params(pgdata=scratch / "pgdata", port=port, **params),
        config=spec_mod.ComputeConfig.model_validate({"spec": raw}),
    )
    async with helpers.run_node(n):
        yield n, port


@needs_pgaudit
async def test_base_audits_ddl_into_the_server_log(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compute_ctl.compute.postgres")
    async with _started(scratch, "Base") as (n, port):
        dsn = n.connstr()  # the superuser, over the socket pg_hba.conf trusts
        conf = (scratch / "pgdata" / "postgresql.conf").read_text().splitlines()
        start = conf.index("# Managed by compute_ctl base audit settings: start")
        assert conf[start : start + 5] == [
            "# Managed by compute_ctl base audit settings: start",
            "pgaudit.log='ddl,role'",
            "pgaudit.log_catalog=off",
            "shared_preload_libraries='pg_stat_statements,pgaudit'",
            "# Managed by compute_ctl base audit settings: end",
        ]
        assert conf.index("# Managed by compute_ctl: end") < start
        assert await _rows(dsn, "SHOW shared_preload_libraries") == [
            ("pg_stat_statements,pgaudit",)
        ]
        assert await _rows(dsn, "SELECT extname FROM pg_extension WHERE extname ~ 'audit'") == [
            ("pgaudit",)
        ]
        assert await _rows(
            dsn,
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = 'postgres' AND s.setrole = 0",
        ) == [(["pgaudit.log=none"],)]

        # A user's DDL is audited; the same in the postgres database is not.
        await _rows(helpers.role_dsn(port), "CREATE TABLE audited_table (a int)")
        await _rows(dsn, "CREATE TABLE not_audited_table (a int)")
        await helpers.wait_until(lambda: "audited_table" in caplog.text, timeout=30)
        audit_lines = [line for line in caplog.text.splitlines() if "AUDIT:" in line]
        assert any("CREATE TABLE" in line and "audited_table" in line for line in audit_lines)
        assert not any("not_audited_table" in line for line in audit_lines)
        # compute_ctl's own statements (the apply created roles and a database) are not.
        assert not any("app_owner" in line for line in audit_lines)
        assert n.state.status is S.RUNNING


needs_rsyslog = pytest.mark.skipif(
    not rsyslog.available(), reason="rsyslog not installed (scripts/setup)"
)


@needs_pgaudit
@needs_rsyslog
async def test_full_writes_audit_files_with_parameters_and_ships_them(scratch: Path) -> None:
    pgdata = scratch / "pgdata"
    async with (
        rsyslog.receiver() as received,
        rsyslog.supervised(scratch / "rsyslog") as rsyslogd,
    ):
        settings = rsyslogd.settings(endpoint=f"127.0.0.1:{received.port}")
        async with _started(scratch, "Full", audit_shipping=settings) as (n, port):
            # The drop-in is written and rsyslogd restarted (by its supervisor) to load it.
            drop_in = (rsyslogd.conf_dir / audit_ship.CONF_NAME).read_text()
            assert f'File="{pgdata}/log/*.log"' in drop_in
            assert f'port="{received.port}"' in drop_in
            assert len(rsyslogd.pids) == 2
            assert audit_ship.read_pid(rsyslogd.pid_file) == rsyslogd.pids[1]

            dsn = n.connstr()
            conf = (pgdata / "postgresql.conf").read_text()
            assert (
                "# Managed by compute_ctl compliance audit settings: begin\n"
                "pgaudit.log_parameter=on\n"
                "pgaudit.log='all'\n"
                "pgaudit.log_catalog=off\n"
                "pgaudit.log_rotation_age=5\n"
                "shared_preload_libraries='pg_stat_statements,pgaudit,pgauditlogtofile'\n"
                "# Managed by compute_ctl compliance audit settings: end\n"
            ) in conf
            assert await _rows(
                dsn, "SELECT extname FROM pg_extension WHERE extname ~ 'audit' ORDER BY 1"
            ) == [("pgaudit",), ("pgauditlogtofile",)]
            async with await psycopg.AsyncConnection.connect(
                helpers.role_dsn(port), autocommit=True
            ) as conn:
                await conn.execute("CREATE TABLE full_audit (a int)")
                await conn.execute("INSERT INTO full_audit VALUES (%s)", [424242])

            def audit_text() -> str:
                return "".join(
                    p.read_text(errors="replace") for p in (pgdata / "log").glob("audit-*.log")
                )

            await helpers.wait_until(lambda: "424242" in audit_text(), timeout=30)
            text = audit_text()
            assert "CREATE TABLE full_audit" in text
            assert "INSERT INTO full_audit" in text
            size = audit.log_dir_size(pgdata)
            assert size >= len(text.encode())

            # The DDL's audit line arrives at the receiver: RFC 5424, facility local5, info,
            # the message Neon's JSON with the spec's ids.
            def shipped() -> list[dict[str, str]]:
                found = []
                for line in list(received.lines):
                    header, _, body = line.partition(" - - - - ")
                    if body:
                        found.append({"header": header, **json.loads(body)})
                return found

            await helpers.wait_until(
                lambda: any("CREATE TABLE full_audit" in m["msg"] for m in shipped()),
                timeout=60,
                what="the DDL's audit line at the receiver",
            )
            ddl = next(m for m in shipped() if "CREATE TABLE full_audit" in m["msg"])
            assert ddl["header"].startswith("<174>1 ")  # local5 * 8 + info
            assert (ddl["endpoint_id"], ddl["project_id"]) == ("ep-audit-1", "prj-audit-1")
            # One audit record per message, starting with its timestamp.
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [^,]+,", ddl["msg"])
            assert sum("CREATE TABLE full_audit" in m["msg"] for m in shipped()) == 1
