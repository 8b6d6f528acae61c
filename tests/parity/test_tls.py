"""TLS for postgres from ``compute_ctl_config.tls`` with real certificates (``cryptography``)
and real TLS clients: psycopg with ``sslmode=verify-full``, and Python's ``ssl`` speaking
PostgreSQL's SSLRequest to read the certificate the server serves. Rotation (new files in
place) is served to new connections after a reload, with the same postmaster, and by
Debian's pgbouncer, which gets Neon's client_tls_* keys; a bad
rotation keeps the previous certificate and says why; a key compute_ctl cannot use is a
clear, immediate error."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import os
import pwd
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from compute_ctl.compute import node, pgtools, state, tls
from compute_ctl.compute import spec as spec_mod
from tests import pgserver
from tests.core import helpers
from tests.parity import test_sidecars

pytestmark = pytest.mark.postgres
in_module_loop = pytest.mark.asyncio(loop_scope="module")
S = state.ComputeStatus
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclasses.dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("test ca"))
            .issuer_name(_name("test ca"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    def issue(self, key: PrivateKey) -> x509.Certificate:
        """A server certificate for 127.0.0.1 and localhost (verify-full checks the SAN)."""
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )


def _key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    )


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, 0600 (pgbouncer, as the postgres OS user, reads it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.chown(tmp, pwd.getpwnam("postgres").pw_uid, -1)
    tmp.replace(path)


@dataclasses.dataclass
class Pair:
    directory: Path
    ca: Ca

    @property
    def config(self) -> spec_mod.TlsConfig:
        return spec_mod.TlsConfig(
            key_path=str(self.directory / "tls.key"), cert_path=str(self.directory / "tls.crt")
        )

    def put(self, key: PrivateKey) -> x509.Certificate:
        cert = self.ca.issue(key)
        _write(self.directory / "tls.key", _key_pem(key))
        _write(self.directory / "tls.crt", cert.public_bytes(serialization.Encoding.PEM))
        return cert


def _served_serial(port: int, ca: Path) -> int:
    """The serial of the certificate postgres (or pgbouncer) presents, checked against
    ``ca``: PostgreSQL's SSLRequest, then a TLS handshake verifying the name."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(_SSL_REQUEST)
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def _wait_served(port: int, ca: Path, serial: int) -> None:
    await helpers.wait_until(
        lambda: _served_serial(port, ca) == serial, timeout=30, what="the new certificate"
    )


@dataclasses.dataclass
class Tls:
    node: node.ComputeNode
    port: int
    pair: Pair
    ca_file: Path
    first: x509.Certificate
    bouncer: test_sidecars.Pgbouncer


def _tls_node(
    pgdata: Path, pair: Pair, *, pgbouncer_settings: dict[str, str] | None = None, **params: Any
) -> tuple[node.ComputeNode, int]:
    """A compute with the tls_experimental feature and ``pair`` as its TLS config."""
    port = pgserver.free_port()
    raw = helpers.spec_json(port=port)
    raw["features"] = ["tls_experimental"]
    raw["pgbouncer_settings"] = pgbouncer_settings
    n = node.ComputeNode(
        helpers.make_params(pgdata=pgdata, port=port, **params),
        config=spec_mod.ComputeConfig.model_validate(
            {"spec": raw, "compute_ctl_config": {"tls": pair.config.model_dump()}}
        ),
    )
    return n, port


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute(module_scratch: Path) -> AsyncIterator[Tls]:
    source = module_scratch / "secret"
    source.mkdir(mode=0o700)
    os.chown(source, pwd.getpwnam("postgres").pw_uid, -1)  # pgbouncer reads the originals
    ca = Ca.make()
    pair = Pair(directory=source, ca=ca)
    first = pair.put(ec.generate_private_key(ec.SECP256R1()))
    ca_file = module_scratch / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    bouncer_dir = module_scratch / "bouncer"
    bouncer_dir.mkdir()
    os.chown(bouncer_dir, pwd.getpwnam("postgres").pw_uid, -1)
    bouncer = test_sidecars.Pgbouncer(bouncer_dir, pg_port=5432)
    n, port = _tls_node(
        module_scratch / "pgdata",
        pair,
        pgbouncer_settings={},
        tls_poll_interval=0.2,
        pgbouncer_ini=bouncer.ini,
        pgbouncer_connstr=bouncer.conninfo,
    )
    try:
        async with helpers.run_node(n):
            yield Tls(node=n, port=port, pair=pair, ca_file=ca_file, first=first, bouncer=bouncer)
    finally:
        bouncer.proc.kill()
        bouncer.proc.wait(timeout=20)


def _settled(s: state.ComputeState) -> bool:
    return s.status is S.RUNNING and s.applied_generation == s.desired_generation


def _verify_full(t: Tls) -> str:
    return f"{helpers.role_dsn(t.port)} sslmode=verify-full sslrootcert={t.ca_file}"


@in_module_loop
async def test_verify_full_client_and_the_copies(compute: Tls) -> None:
    pgdata = compute.node.params.pgdata
    # Neon's place: after the storage lines, before the locale lines.
    assert (
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nlc_messages="
    ) in (pgdata / "postgresql.conf").read_text()
    key = (pgdata / "server.key").stat()
    assert key.st_mode & 0o777 == 0o600
    assert key.st_uid == pwd.getpwnam("postgres").pw_uid
    assert (pgdata / "server.crt").read_bytes() == (compute.pair.directory / "tls.crt").read_bytes()
    async with await psycopg.AsyncConnection.connect(_verify_full(compute)) as conn:
        cur = await conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await cur.fetchone() == (True,)
    assert _served_serial(compute.port, compute.ca_file) == compute.first.serial_number


@in_module_loop
async def test_pgbouncer_gets_neons_client_tls_keys(compute: Tls) -> None:
    await compute.bouncer.wait_config(
        client_tls_sslmode="allow",
        client_tls_cert_file=compute.pair.config.cert_path,
        client_tls_key_file=compute.pair.config.key_path,
    )
    assert _served_serial(compute.bouncer.port, compute.ca_file) == compute.first.serial_number


@in_module_loop
async def test_rotation_is_served_without_a_restart(compute: Tls) -> None:
    assert compute.node.postmaster is not None
    postmaster = compute.node.postmaster.pid
    # An RSA key: OpenSSL's check accepts what postgres accepts (Neon: P-256 only).
    new = compute.pair.put(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    await _wait_served(compute.port, compute.ca_file, new.serial_number)
    async with await psycopg.AsyncConnection.connect(_verify_full(compute)) as conn:
        cur = await conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await cur.fetchone() == (True,)
    assert compute.node.postmaster.pid == postmaster
    await compute.node.state.wait_for(_settled, timeout=30)
    # The same reconfigure re-tuned pgbouncer: its RELOAD loads the new files too.
    await _wait_served(compute.bouncer.port, compute.ca_file, new.serial_number)


@in_module_loop
async def test_a_bad_rotation_keeps_the_served_certificate(compute: Tls) -> None:
    served = _served_serial(compute.port, compute.ca_file)
    cert = compute.pair.ca.issue(ec.generate_private_key(ec.SECP256R1()))
    _write(compute.pair.directory / "tls.crt", cert.public_bytes(serialization.Encoding.PEM))
    # The key on disk is the previous one: it does not match the new certificate.
    await helpers.wait_until(
        lambda: "not a private key matching" in (compute.node.state.pending_error or ""),
        timeout=30,
        what="the failed attempt",
    )
    assert compute.node.state.status is S.RUNNING
    assert _served_serial(compute.port, compute.ca_file) == served
    fixed = compute.pair.put(ec.generate_private_key(ec.SECP256R1()))
    await _wait_served(compute.port, compute.ca_file, fixed.serial_number)
    await helpers.wait_until(
        lambda: compute.node.state.pending_error is None, timeout=30, what="recovery"
    )


async def test_unusable_keys_are_clear_immediate_errors(scratch: Path) -> None:
    ca = Ca.make()
    pair = Pair(directory=scratch, ca=ca)
    pair.put(ec.generate_private_key(ec.SECP256R1()))
    user = pgtools.OsUser.resolve("postgres")
    pgdata = scratch / "pgdata"
    pgdata.mkdir()
    other = ec.generate_private_key(ec.SECP256R1())
    key_path = scratch / "tls.key"
    cases = [
        (_key_pem(other), "not a private key matching the first certificate"),
        (_key_pem(other, password=b"pw"), "is encrypted"),
        (b"not a key\n", "not a private key matching"),
    ]
    for data, message in cases:
        _write(key_path, data)
        with pytest.raises(tls.TlsError, match=message):
            await asyncio.wait_for(tls.install(pair.config, pgdata=pgdata, user=user), 10)
        assert not (pgdata / tls.KEY_FILE).exists()  # nothing copied
    os.unlink(key_path)
    with pytest.raises(tls.TlsError, match=r"tls.key not readable after 0\.3 s"):
        await tls.install(pair.config, pgdata=pgdata, user=user, wait=0.3)


async def test_a_start_with_an_unusable_key_fails_clearly(scratch: Path) -> None:
    pair = Pair(directory=scratch, ca=Ca.make())
    pair.put(ec.generate_private_key(ec.SECP256R1()))
    _write(scratch / "tls.key", _key_pem(ec.generate_private_key(ec.SECP256R1())))
    n, _ = _tls_node(scratch / "pgdata", pair)
    async with helpers.run_node(n, until=S.FAILED):
        assert "compute_ctl_config.tls.key_path" in (n.state.error or "")
        assert "not a private key matching" in (n.state.error or "")
