"""Password verifiers never reach the server log, even when the spec asks PostgreSQL to
log every statement and a statement carrying a verifier fails (compute_ctl re-logs the
server's stderr, so the server log is our log)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from compute_ctl.compute import api_models, errors
from compute_ctl.compute.catalog import ondemand
from compute_ctl.compute.http import readiness
from tests import pgserver
from tests.catalog.conftest import apply, make_spec, option, role, scram_verifier

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def chatty() -> Iterator[pgserver.PgServer]:
    with pgserver.running(
        extra_conf="log_statement = 'all'\nlog_min_error_statement = 'error'\n"
    ) as server:
        yield server


async def test_verifiers_stay_out_of_the_server_log(chatty: pgserver.PgServer) -> None:
    verifier = scram_verifier("log-me-not")
    await apply(chatty, make_spec(roles=[role("quiet_owner", verifier)]))
    # A failing apply whose batch carries a verifier: PostgreSQL rejects the date.
    failing = make_spec(
        roles=[role("quiet_other", scram_verifier("nor-me"), [option("VALID UNTIL", "never?")])]
    )
    with pytest.raises(errors.ComputeError):
        await apply(chatty, failing)
    log = chatty.log_tail(limit=None)
    assert "CREATE ROLE" not in log  # statement logging is off for our sessions...
    assert "SCRAM-SHA-256$" not in log  # ...and no verifier is ever echoed
    assert "statement:" in log or "LOG:" in log  # the server does log (sanity)


async def test_every_other_callers_statements_stay_out_of_the_server_log(
    chatty: pgserver.PgServer,
) -> None:
    """The HTTP handlers' catalog requests, the readiness probe and the reload check run
    on the same policy: nothing they send is logged, even with ``log_statement = all``."""
    connstr = chatty.dsn()
    await ondemand.databases_and_roles(connstr)
    await ondemand.install_extension(
        connstr, database="postgres", extension="pg_trgm", version="1.6"
    )
    await ondemand.grant_schema_privileges(
        connstr,
        database="postgres",
        schema="public",
        role="pg_monitor",
        privileges=[api_models.Privilege.USAGE],
    )
    probe = readiness.Readiness(connstr)
    assert await probe.check() is None
    await probe.close()
    # The control: a session of its own is logged.
    async with await psycopg.AsyncConnection.connect(connstr) as conn:
        await conn.execute("SELECT 'the control statement'")
    log = chatty.log_tail(limit=None)
    assert "the control statement" in log
    for text in ("rolpassword", "pg_trgm", "GRANT", "SELECT 1"):
        assert text not in log
