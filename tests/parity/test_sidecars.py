"""pgbouncer and local_proxy driven by a real compute: Debian's pgbouncer (run as the
postgres OS user) gets ``pgbouncer_settings`` at start and on ``/configure`` (ini rewrite,
then RELOAD: ``SHOW CONFIG`` on its admin console shows the values), and is SIGKILLed at
termination; a process holding local_proxy's pid lock gets its config and SIGHUPs, then
SIGTERM at termination."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from compute_ctl.compute import admission, errors, node, pgbouncer, state
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers
from tests.parity import test_local_proxy

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.path.exists(PGBOUNCER), reason="pgbouncer not installed"),
]
S = state.ComputeStatus
in_module_loop = pytest.mark.asyncio(loop_scope="module")

INI = """\
; written by the test; this comment must survive the rewrite
[databases]
* = host=127.0.0.1 port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = postgres
pidfile = {dir}/pgbouncer.pid
logfile = {dir}/pgbouncer.log
; the spec changes this one
default_pool_size = 20
"""


class Pgbouncer:
    def __init__(self, directory: Path, pg_port: int) -> None:
        self.dir = directory
        self.port = pgserver.free_port()
        self.ini = directory / "pgbouncer.ini"
        self.ini.write_text(INI.format(dir=directory, port=self.port, pg_port=pg_port))
        (directory / "userlist.txt").write_text('"postgres" ""\n')
        user = pwd.getpwnam("postgres")
        for path in (self.ini, directory / "userlist.txt"):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.conninfo = f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=postgres"
        # pgbouncer refuses to run as root.
        self.proc = subprocess.Popen(
            [PGBOUNCER, str(self.ini)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pgserver.die_with_parent(),
        )

    async def show_config(self) -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            cur = await conn.execute("SHOW CONFIG")
            return {str(row[0]): str(row[1]) for row in await cur.fetchall()}

    async def wait_config(self, **expected: str) -> None:
        async def matches() -> bool:
            with contextlib.suppress(psycopg.OperationalError):
                config = await self.show_config()
                return all(config.get(k) == v for k, v in expected.items())
            return False

        deadline = asyncio.get_running_loop().time() + 30
        while not await matches():
            assert asyncio.get_running_loop().time() < deadline, f"SHOW CONFIG != {expected}"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def bouncer(module_scratch: Path) -> Iterator[Pgbouncer]:
    directory = module_scratch / "bouncer"
    directory.mkdir()
    os.chown(directory, pwd.getpwnam("postgres").pw_uid, -1)
    b = Pgbouncer(directory, pg_port=5432)  # only its admin console is used
    try:
        yield b
    finally:
        b.proc.kill()
        b.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def proxy_dir(module_scratch: Path) -> Iterator[Path]:
    directory = module_scratch / "local_proxy"
    directory.mkdir()
    with test_local_proxy.lock_holder(directory):
        yield directory


LOCAL_PROXY_CONFIG: dict[str, Any] = {
    "jwks": [
        {
            "id": "k1",
            "role_names": ["authenticated"],
            "jwks_url": "https://example.invalid/jwks",
            "provider_name": "p",
            "jwt_audience": "aud",
        }
    ]
}


def _spec(port: int, pool_size: str, **more: str) -> dict[str, Any]:
    raw = helpers.spec_json(port=port)
    raw["pgbouncer_settings"] = {"default_pool_size": pool_size, **more}
    raw["local_proxy_config"] = LOCAL_PROXY_CONFIG
    return raw


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute(
    module_scratch: Path, bouncer: Pgbouncer, proxy_dir: Path
) -> AsyncIterator[node.ComputeNode]:
    port = pgserver.free_port()
    n = node.ComputeNode(
        helpers.make_params(
            pgdata=module_scratch / "pgdata",
            port=port,
            pgbouncer_ini=bouncer.ini,
            pgbouncer_connstr=bouncer.conninfo,
            local_proxy_dir=proxy_dir,
        ),
        config=helpers.config(_spec(port, "42")),
    )
    async with helpers.run_node(n):
        yield n


@in_module_loop
async def test_start_and_configure_reach_pgbouncer_and_local_proxy(
    compute: node.ComputeNode, bouncer: Pgbouncer, proxy_dir: Path
) -> None:
    await bouncer.wait_config(default_pool_size="42")
    text = bouncer.ini.read_text()
    assert "; the spec changes this one\ndefault_pool_size = 42\n" in text
    assert text.startswith("; written by the test; this comment must survive")
    assert bouncer.ini.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    # local_proxy: the config, and a SIGHUP from the start's background step and one from
    # the Primary apply's synchronous step (Neon runs both).
    assert json.loads((proxy_dir / "config.json").read_text()) == LOCAL_PROXY_CONFIG
    test_local_proxy._wait(lambda: test_local_proxy._counts(proxy_dir) == (2, 0), "2 SIGHUPs")

    port = int(compute.params.local.port)
    config = _spec(port, "17", max_client_conn="77")
    config["local_proxy_config"] = {"jwks": []}
    await compute.configure(helpers.config(config))
    await bouncer.wait_config(default_pool_size="17", max_client_conn="77")
    test_local_proxy._wait(lambda: test_local_proxy._counts(proxy_dir) == (3, 0), "3rd SIGHUP")
    assert json.loads((proxy_dir / "config.json").read_text()) == {"jwks": []}


@in_module_loop
async def test_termination_kills_pgbouncer_and_stops_local_proxy(
    compute: node.ComputeNode, bouncer: Pgbouncer, proxy_dir: Path
) -> None:
    assert bouncer.proc.poll() is None
    await compute.terminate("fast")
    assert await asyncio.to_thread(bouncer.proc.wait, 20) == -9  # SIGKILL, as Neon
    test_local_proxy._wait(lambda: test_local_proxy._counts(proxy_dir)[1] == 1, "SIGTERM")


def test_ini_rewrite_keeps_layout_and_sets_every_duplicate() -> None:
    text = "[databases]\ndefault_pool_size = 1\n[pgbouncer]\n; c\nA = 1\na=2\n\n[users]\n"
    out = pgbouncer.rewrite_text(text, {"a": "9", "new_key": "x"})
    assert out == (
        "[databases]\ndefault_pool_size = 1\n[pgbouncer]\n; c\na = 9\na = 9\nnew_key = x\n"
        "\n[users]\n"
    )
    with pytest.raises(pgbouncer.PgbouncerError, match=r"no \[pgbouncer\] section"):
        pgbouncer.rewrite_text("[databases]\n", {"a": "1"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pgbouncer_settings", {"pool_mode": "session\nauth_type = trust"}, "control characters"),
        ("pgbouncer_settings", {"Bad Key": "1"}, "not a pgbouncer setting name"),
        ("local_proxy_config", {"jwks": [{"id": "k"}]}, r"local_proxy_config\.jwks\.0\.role_names"),
        ("local_proxy_config", {"jwks": "x"}, r"local_proxy_config\.jwks: Input should be"),
    ],
)
def test_admission_refuses_what_the_sidecars_cannot_take(
    field: str, value: Any, message: str
) -> None:
    raw = helpers.spec_json(port=5432)
    raw[field] = value
    with pytest.raises(errors.AdmissionError, match=message):
        admission.admit_spec(spec_mod.ComputeSpec.model_validate(raw), rules=admission.Rules())


def test_tls_adds_neons_client_tls_keys_after_the_specs() -> None:
    spec = helpers.make_spec(port=5432)
    spec.pgbouncer_settings = {"pool_mode": "session"}
    config = spec_mod.TlsConfig(key_path="/k.pem", cert_path="/c.pem")
    assert list(pgbouncer.tune_settings(spec, config).items()) == [
        ("pool_mode", "session"),
        ("client_tls_cert_file", "/c.pem"),
        ("client_tls_key_file", "/k.pem"),
        ("client_tls_sslmode", "allow"),
    ]
    assert pgbouncer.tune_settings(spec, None) == {"pool_mode": "session"}


def test_admin_conninfo_defaults_are_neons() -> None:
    from psycopg.conninfo import conninfo_to_dict

    pod = conninfo_to_dict(
        pgbouncer.admin_conninfo(None, autoscaling=False, environ={"PGBOUNCER_PASSWORD": "pw"})
    )
    assert pod == {
        "host": "localhost",
        "port": "6432",
        "dbname": "pgbouncer",
        "user": "postgres",
        "sslmode": "disable",
        "password": "pw",
        "connect_timeout": "5",
    }
    vm = conninfo_to_dict(
        pgbouncer.admin_conninfo(None, autoscaling=True, environ={"PGBOUNCER_PASSWORD": "pw"})
    )
    assert (vm["host"], vm["user"], "password" in vm) == ("/tmp", "pgbouncer", False)
    with pytest.raises(errors.ConfigError, match="not a valid conninfo"):
        pgbouncer.admin_conninfo("host=x password", autoscaling=False, environ={})
    assert pgbouncer.ini_path(None, autoscaling=True) == Path("/etc/pgbouncer.ini")
    assert pgbouncer.ini_path(None, autoscaling=False) == Path(
        "/var/db/postgres/pgbouncer/pgbouncer.ini"
    )
