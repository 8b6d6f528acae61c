"""TLS for postgres (Neon parity, topic 7): the key and certificate copies, and rotation.

TLS is *in effect* when the process's ``compute_ctl_config.tls`` names a key and a
certificate *and* the spec has the ``tls_experimental`` feature (``in_effect``). Then
``pgconf`` writes ``ssl = on`` and ``ssl_cert_file``/``ssl_key_file`` (``server.crt``,
``server.key``, relative to PGDATA), and ``install`` copies the two files there: the key
0600 and both owned by the OS user postgres runs as (postgres refuses a key anyone else
can read). The node installs them at start, before postgres is spawned, and at every
reconfigure, before the reload.

``Watch`` polls a SHA-256 of the two source files; a change makes the node reconfigure
(the copies are replaced and postgres reloads, which loads the new certificate for new
connections: no restart).

Differences from Neon (``tls.rs``), each because Neon's behaviour hurts:

- Neon accepts only an ECDSA P-256 key in SEC1 PEM with an ``ecdsa-with-SHA256``
  certificate, and retries a key it cannot use every second, forever (the start hangs).
  Here the pair is checked by OpenSSL itself (``ssl.SSLContext.load_cert_chain``, what
  postgres does at reload): any key type postgres accepts (RSA, EC, Ed25519) passes; a key
  that does not match the certificate, an encrypted key (postgres would need a passphrase
  command) or a file that is not PEM is an immediate ``TlsError`` naming the file. Only a
  *missing* file is waited for, and for a bounded time (``wait``).
- The pair is checked before PGDATA's copies are replaced, through root-private temporary
  files, so a bad rotation leaves postgres serving the previous certificate.
- Neon hashes the certificate only, every 60 s, and also reconfigures once as soon as the
  compute first runs; here both files are hashed (a key-only change counts), the interval
  is ``--tls-poll-interval``, and there is no reconfigure at first start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from compute_ctl.compute import errors, pgtools, safefs
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "ComputeTls",
    "TlsError",
    "Watch",
    "conf_lines",
    "digest",
    "in_effect",
    "install",
    "requested",
]

logger = logging.getLogger(__name__)

CERT_FILE = "server.crt"
KEY_FILE = "server.key"
_MAX_FILE = 1 << 20
_WAIT_STEP_S = 0.2


class TlsError(errors.ComputeError):
    """The configured key or certificate cannot be used (named in the message)."""


def requested(spec: spec_mod.ComputeSpec) -> bool:
    """The spec has Neon's ``tls_experimental`` feature."""
    return spec_mod.ComputeFeature.TLS_EXPERIMENTAL in spec.features


def in_effect(
    spec: spec_mod.ComputeSpec, tls: spec_mod.TlsConfig | None
) -> spec_mod.TlsConfig | None:
    """The TLS config postgres, pgbouncer and local_proxy use for ``spec``, or None."""
    return tls if tls is not None and requested(spec) else None


def conf_lines() -> list[str]:
    """The ``postgresql.conf`` lines (Neon's, after the storage lines)."""
    return ["ssl = on", f"ssl_cert_file = '{CERT_FILE}'", f"ssl_key_file = '{KEY_FILE}'"]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise TlsError(f"compute_ctl_config.tls.{what} {path}: {e.strerror or e}") from e
    if len(data) > _MAX_FILE:
        raise TlsError(f"compute_ctl_config.tls.{what} {path}: larger than {_MAX_FILE} bytes")
    return data


def _no_passphrase() -> bytes:
    raise TlsError("is encrypted; postgres would need ssl_passphrase_command")


def check_pair(cert: bytes, key: bytes, tls: spec_mod.TlsConfig) -> None:
    """OpenSSL's own check that ``key`` is a usable private key of ``cert``'s first
    certificate (the rest of the PEM is the chain). Bounded: nothing prompts or retries."""
    with tempfile.TemporaryDirectory(prefix="compute_ctl-tls-") as tmp:  # mode 0700
        cert_tmp, key_tmp = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_tmp.write_bytes(cert)
        key_tmp.write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert_tmp, key_tmp, password=_no_passphrase)
        except TlsError as e:
            raise TlsError(f"compute_ctl_config.tls.key_path {tls.key_path} {e}") from None
        except ssl.SSLError as e:
            raise TlsError(
                f"compute_ctl_config.tls.key_path {tls.key_path} is not a private key matching "
                f"the first certificate of cert_path {tls.cert_path} (OpenSSL: {e.reason or e})"
            ) from None


def digest(tls: spec_mod.TlsConfig) -> str:
    """SHA-256 over both source files (raises ``TlsError`` when one is unreadable)."""
    h = hashlib.sha256()
    for path, what in ((tls.cert_path, "cert_path"), (tls.key_path, "key_path")):
        h.update(_read(path, what))
        h.update(b"\0")
    return h.hexdigest()


async def _wait_readable(tls: spec_mod.TlsConfig, *, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        missing = [p for p in (tls.cert_path, tls.key_path) if not os.access(p, os.R_OK)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TlsError(
                f"compute_ctl_config.tls: {', '.join(missing)} not readable after {wait:g} s"
            )
        await asyncio.sleep(_WAIT_STEP_S)


async def install(
    tls: spec_mod.TlsConfig, *, pgdata: Path, user: pgtools.OsUser, wait: float = 60.0
) -> str:
    """Check the pair, then replace PGDATA's ``server.crt`` and ``server.key`` (0600, owned
    by ``user``); the digest of what was installed. Waits at most ``wait`` seconds for
    missing files; any other problem is an immediate ``TlsError``."""
    await _wait_readable(tls, wait=wait)
    cert = _read(tls.cert_path, "cert_path")
    key = _read(tls.key_path, "key_path")
    await asyncio.to_thread(check_pair, cert, key, tls)
    safefs.write_bytes(pgdata, CERT_FILE, cert, owner=user, mode=0o600)
    safefs.write_bytes(pgdata, KEY_FILE, key, owner=user, mode=0o600)
    h = hashlib.sha256()
    for data in (cert, key):
        h.update(data)
        h.update(b"\0")
    return h.hexdigest()


class Watch:
    """Polls the source files; calls ``on_change`` when their digest moves away from the
    last one seen (the installed pair's, at first)."""

    def __init__(
        self,
        tls: spec_mod.TlsConfig,
        *,
        interval: float,
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.tls = tls
        self.interval = interval
        self.on_change = on_change
        self.seen: str | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                now = await asyncio.to_thread(digest, self.tls)
            except TlsError as e:
                logger.warning("tls: cannot read the certificate files: %s", e)
                continue
            if self.seen is None:
                self.seen = now
            elif now != self.seen:
                logger.info("tls: certificate files changed; reconfiguring")
                self.seen = now
                await self.on_change()


class ComputeTls:
    """One compute's TLS: the process's config, the copies for a spec, and the watch."""

    def __init__(
        self,
        config: spec_mod.TlsConfig | None,
        *,
        pgdata: Path,
        user: pgtools.OsUser,
        interval: float,
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.pgdata = pgdata
        self.user = user
        self._watch = (
            Watch(config, interval=interval, on_change=on_change) if config is not None else None
        )

    def for_spec(self, spec: spec_mod.ComputeSpec) -> spec_mod.TlsConfig | None:
        return in_effect(spec, self.config)

    async def install(self, spec: spec_mod.ComputeSpec) -> None:
        """Neon copies the key and cert at every postgresql.conf write; so does the node."""
        config = self.for_spec(spec)
        if config is None:
            return
        installed = await install(config, pgdata=self.pgdata, user=self.user)
        if self._watch is not None:
            self._watch.seen = installed  # the baseline of the next comparison

    async def watch(self) -> None:
        """Poll for rotations (only when the process has a TLS config)."""
        if self._watch is not None:
            await self._watch.run()
