"""The test PostgreSQL fixture really runs PostgreSQL, as the unprivileged user."""

from __future__ import annotations

import psycopg

from tests import pgserver


def test_real_postgres_answers(pg_session: pgserver.PgServer) -> None:
    with psycopg.connect(pg_session.dsn()) as conn:
        row = conn.execute("select current_user, current_setting('server_version_num')").fetchone()
    assert row is not None
    assert row[0] == pgserver.SUPERUSER
    assert int(row[1]) >= 150000
