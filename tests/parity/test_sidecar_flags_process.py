"""The sidecar and TLS flags through the real ``compute_ctl`` process: ``--pgbouncer-ini``
and ``--pgbouncer-connstr`` (Debian's pgbouncer, as the postgres OS user, gets
``pgbouncer_settings`` and is SIGKILLed at termination), ``--local-proxy-dir`` (the lock
holder there gets the config, SIGHUP, then SIGTERM) and ``--tls-poll-interval`` (a
rotated certificate is served within seconds; the default would wait 60 s).
tests/parity/test_sidecars.py and test_tls.py cover the same behaviour in-process."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.parity import test_local_proxy, test_sidecars, test_tls
from tests.support import compute_process

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.path.exists(test_sidecars.PGBOUNCER), reason="no pgbouncer"),
]


def _show_config(bouncer: test_sidecars.Pgbouncer) -> dict[str, str]:
    try:
        with psycopg.connect(bouncer.conninfo, autocommit=True) as conn:
            rows = conn.execute("SHOW CONFIG").fetchall()
    except psycopg.OperationalError:
        return {}
    return {str(row[0]): str(row[1]) for row in rows}


def _served(port: int, ca: Path) -> int | None:
    try:
        return test_tls._served_serial(port, ca)
    except OSError:
        return None


@pytest.fixture
def proxy_dir(scratch: Path) -> Iterator[Path]:
    directory = scratch / "local_proxy"
    directory.mkdir()
    with test_local_proxy.lock_holder(directory):
        yield directory


def test_the_flags_take_effect_in_the_process(scratch: Path, proxy_dir: Path) -> None:
    postgres = pwd.getpwnam("postgres").pw_uid
    bouncer_dir = scratch / "bouncer"
    bouncer_dir.mkdir()
    os.chown(bouncer_dir, postgres, -1)
    bouncer = test_sidecars.Pgbouncer(bouncer_dir, pg_port=5432)  # its admin console only
    secret = scratch / "secret"
    secret.mkdir(mode=0o700)
    os.chown(secret, postgres, -1)  # pgbouncer reads the originals (client_tls_*)
    pair = test_tls.Pair(directory=secret, ca=test_tls.Ca.make())
    first = pair.put(ec.generate_private_key(ec.SECP256R1()))
    ca_file = scratch / "ca.pem"
    ca_file.write_bytes(pair.ca.cert.public_bytes(serialization.Encoding.PEM))

    spec_extra = {
        "features": ["tls_experimental"],
        "pgbouncer_settings": {"default_pool_size": "42"},
        "local_proxy_config": test_sidecars.LOCAL_PROXY_CONFIG,
    }
    flags = [
        *("--pgbouncer-ini", str(bouncer.ini), "--pgbouncer-connstr", bouncer.conninfo),
        *("--local-proxy-dir", str(proxy_dir), "--tls-poll-interval", "0.2"),
    ]
    try:
        with compute_process.running_compute(
            extra_args=flags,
            spec_extra=spec_extra,
            config_extra={"tls": pair.config.model_dump()},
        ) as compute:
            _check_flags(compute, bouncer, proxy_dir, pair, ca_file, first.serial_number)
    finally:
        bouncer.proc.kill()
        bouncer.proc.wait(timeout=20)


def _check_flags(
    compute: compute_process.ComputeProcess,
    bouncer: test_sidecars.Pgbouncer,
    proxy_dir: Path,
    pair: test_tls.Pair,
    ca_file: Path,
    first_serial: int,
) -> None:
    port = compute.port
    # --pgbouncer-ini: the ini rewritten; --pgbouncer-connstr: RELOAD reached pgbouncer.
    assert "default_pool_size = 42\n" in bouncer.ini.read_text()
    compute_process.wait_until_sync(
        lambda: _show_config(bouncer).get("default_pool_size") == "42",
        timeout=30,
        what="pgbouncer's RELOAD",
    )
    # --local-proxy-dir: the config there (with the TLS pair, as Neon's), the holder
    # signalled.
    written = json.loads((proxy_dir / "config.json").read_text())
    assert written == {**test_sidecars.LOCAL_PROXY_CONFIG, "tls": pair.config.model_dump()}
    test_local_proxy._wait(lambda: test_local_proxy._counts(proxy_dir)[0] >= 1, "SIGHUP")
    # --tls-poll-interval: the rotation is noticed within seconds, not the default 60 s.
    assert _served(port, ca_file) == first_serial
    new = pair.put(ec.generate_private_key(ec.SECP256R1()))
    compute_process.wait_until_sync(
        lambda: _served(port, ca_file) == new.serial_number,
        timeout=15,
        what="the rotated certificate",
    )

    code, _ = compute.request("POST", "/terminate?mode=fast")
    assert code == 200
    assert bouncer.proc.wait(timeout=30) == -9  # SIGKILL, as Neon
    test_local_proxy._wait(lambda: test_local_proxy._counts(proxy_dir)[1] == 1, "SIGTERM")
