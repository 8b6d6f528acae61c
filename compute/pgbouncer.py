"""pgbouncer tuning (Neon parity, topic 5): ``pgbouncer_settings`` into the ini, then RELOAD.

Owns the ini rewrite (keys of the ``[pgbouncer]`` section), the admin-console ``RELOAD``
and the termination kill. The node runs ``tune`` in the background at start and on every
reconfigure when the spec has ``pgbouncer_settings`` (errors are logged, never a compute
failure, as in Neon); ``kill`` at termination.

Paths and connection (``--pgbouncer-ini``, ``--pgbouncer-connstr``; beyond Neon, whose are
fixed): by default Neon's ``/etc/pgbouncer.ini`` and ``host=/tmp port=6432 user=pgbouncer``
with ``AUTOSCALING``, otherwise ``/var/db/postgres/pgbouncer/pgbouncer.ini`` and
``host=localhost port=6432 user=postgres sslmode=disable`` plus ``PGBOUNCER_PASSWORD``.

Differences from Neon (``pg_helpers.rs``), because Neon's behaviour hurts:

- the ini is written first and RELOAD sent after, so a pgbouncer that is down (or starts
  later) still reads the new settings; Neon connects first and, if it cannot, leaves the
  ini stale;
- the rewrite keeps comments, order and layout; only the ``key = value`` lines of the keys
  set change (every duplicate of a key gets the value) and new keys are appended to the
  section; the file is replaced atomically with its mode and owner kept. Neon re-renders
  the whole file and drops comments. A missing ``[pgbouncer]`` section is an error, not a
  panic;
- the connection string (with its password) is never logged;
- admission refuses keys that are not pgbouncer names and values with control characters
  (a newline would inject ini lines);
- a failed RELOAD is an error (logged), not a success; each attempt (connect, RELOAD,
  answer) is bounded (``_RELOAD_TIMEOUT_S``), where Neon waits for the answer forever;
- the ini and the pid file are read without blocking, as regular files only (a FIFO
  planted at ``/tmp/pgbouncer.pid`` would hang Neon's termination);
- the termination SIGKILL goes only to a process named ``pgbouncer`` (a stale pid file may
  name a reused pid); the pid file is the ini's ``pidfile`` (Neon: ``/tmp/pgbouncer.pid``,
  also the fallback here).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from compute_ctl.compute import errors
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "DEFAULT_PIDFILE",
    "PgbouncerError",
    "admin_conninfo",
    "check_settings",
    "ini_path",
    "kill",
    "rewrite_ini",
    "tune",
    "tune_settings",
]

logger = logging.getLogger(__name__)

DEFAULT_PIDFILE = Path("/tmp/pgbouncer.pid")
_VM_INI = Path("/etc/pgbouncer.ini")
_POD_INI = Path("/var/db/postgres/pgbouncer/pgbouncer.ini")
_VM_CONN = "host=/tmp port=6432 dbname=pgbouncer user=pgbouncer"
_POD_CONN = "host=localhost port=6432 dbname=pgbouncer user=postgres sslmode=disable"
_ATTEMPTS = 4
_ATTEMPT_PAUSE_S = 1.0
_CONNECT_TIMEOUT_S = 5
_RELOAD_TIMEOUT_S = 15.0  # one attempt: connect, RELOAD, answer
_MAX_FILE = 1 << 20

_KEY_RE = re.compile(r"[a-z_][a-z0-9_]*")
_BAD_VALUE_RE = re.compile(r"[\x00-\x1f\x7f]")
_SECTION_RE = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]\s*$")
_LINE_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*=")


class PgbouncerError(RuntimeError):
    """The ini could not be rewritten, or pgbouncer refused or did not answer."""


def check_settings(settings: Mapping[str, str] | None) -> None:
    """Admission's rule: each key a pgbouncer setting name, each value one ini line."""
    for key, value in (settings or {}).items():
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a pgbouncer setting name")
        if _BAD_VALUE_RE.search(value):
            raise ValueError(f"{key}: the value must not contain control characters")


def ini_path(configured: Path | None, *, autoscaling: bool) -> Path:
    if configured is not None:
        return configured
    return _VM_INI if autoscaling else _POD_INI


def admin_conninfo(configured: str | None, *, autoscaling: bool, environ: Mapping[str, str]) -> str:
    """The admin console's conninfo: ``configured`` or Neon's, plus ``PGBOUNCER_PASSWORD``
    (pods only, as Neon) when the conninfo has no password of its own."""
    import psycopg
    import psycopg.conninfo

    try:
        fields = psycopg.conninfo.conninfo_to_dict(
            configured or (_VM_CONN if autoscaling else _POD_CONN)
        )
    except psycopg.ProgrammingError:  # its text may quote the string, password included
        raise errors.ConfigError("--pgbouncer-connstr is not a valid conninfo") from None
    password = environ.get("PGBOUNCER_PASSWORD")
    if password and not autoscaling and "password" not in fields:
        fields["password"] = password
    fields.setdefault("connect_timeout", str(_CONNECT_TIMEOUT_S))
    return psycopg.conninfo.make_conninfo("", **fields)


def tune_settings(spec: spec_mod.ComputeSpec, tls: spec_mod.TlsConfig | None) -> dict[str, str]:
    """The keys to write: the spec's, then (TLS in effect) Neon's client_tls_* keys with
    the original paths (pgbouncer runs beside postgres, not in PGDATA)."""
    settings = dict(spec.pgbouncer_settings or {})
    if tls is not None:
        settings["client_tls_cert_file"] = tls.cert_path
        settings["client_tls_key_file"] = tls.key_path
        settings["client_tls_sslmode"] = "allow"
    return settings


def rewrite_text(text: str, settings: Mapping[str, str]) -> str:
    """``text`` with ``settings`` set in its ``[pgbouncer]`` section (module docstring)."""
    lines = text.splitlines()
    section: str | None = None
    start = end = -1  # [start, end): the section's lines after its header
    seen: set[str] = set()
    for index, line in enumerate(lines):
        header = _SECTION_RE.match(line)
        if header:
            if section == "pgbouncer":
                end = index
            section = header.group(1).lower()
            if section == "pgbouncer" and start < 0:
                start = index + 1
            continue
        if section != "pgbouncer":
            continue
        match = _LINE_KEY_RE.match(line)
        if match and match.group(1).lower() in settings:
            key = match.group(1).lower()
            lines[index] = f"{key} = {settings[key]}"
            seen.add(key)
    if start < 0:
        raise PgbouncerError("the ini has no [pgbouncer] section")
    if end < 0:
        end = len(lines)
    while end > start and not lines[end - 1].strip():
        end -= 1  # new keys go after the section's last non-blank line
    new = [f"{key} = {value}" for key, value in settings.items() if key not in seen]
    lines[end:end] = new
    return "\n".join(lines) + "\n"


def _read(path: Path) -> tuple[str, os.stat_result]:
    """A regular file's text and status, read without blocking: ``/tmp/pgbouncer.pid`` (and
    a pod's ini directory) may hold a FIFO another user planted, whose open would block."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE:
        raise OSError(errno.EFBIG, f"larger than {_MAX_FILE} bytes")
    return data.decode(), st


def rewrite_ini(path: Path, settings: Mapping[str, str]) -> None:
    """Replace ``path`` atomically with ``settings`` set, keeping its mode and owner."""
    try:
        text, st = _read(path)
    except (OSError, UnicodeDecodeError) as e:
        raise PgbouncerError(f"{path}: {getattr(e, 'strerror', None) or e}") from e
    new = rewrite_text(text, settings)
    tmp = path.with_name(f".{path.name}.compute_ctl.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            os.fchown(f.fileno(), st.st_uid, st.st_gid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


async def _reload_once(conninfo: str) -> None:
    """One RELOAD, bounded as a whole (beyond Neon): connect_timeout covers only the
    connect, and a console that never answers would hold the sidecars' lock for good. On
    a timeout the socket is cut (psycopg would wait for its cancel request).
    psycopg is imported here, not with the module: the operator admits specs with
    ``check_settings`` and never sends a RELOAD."""
    import psycopg

    from compute_ctl.compute.storage import libpq

    deadline = time.monotonic() + _RELOAD_TIMEOUT_S
    async with asyncio.timeout(_RELOAD_TIMEOUT_S):
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with conn:
        # The admin console speaks the simple query protocol only: a query without
        # parameters is sent that way by psycopg.
        await libpq.bounded(
            conn, lambda: conn.execute("RELOAD"), timeout=max(deadline - time.monotonic(), 0.0)
        )


async def _reload(conninfo: str) -> None:
    import psycopg

    failure = ""
    for attempt in range(_ATTEMPTS):
        if attempt:
            await asyncio.sleep(_ATTEMPT_PAUSE_S)
        try:
            await _reload_once(conninfo)
            return
        except psycopg.OperationalError as e:
            failure = str(e)
        except TimeoutError:
            failure = f"did not answer within {_RELOAD_TIMEOUT_S:g} s"
        except psycopg.Error as e:
            raise PgbouncerError(f"RELOAD failed: {e}") from None
    raise PgbouncerError(f"cannot reach the pgbouncer admin console: {failure}") from None


async def tune(*, ini: Path, conninfo: str, settings: Mapping[str, str]) -> None:
    """Write ``settings`` into the ini, then RELOAD; raises ``PgbouncerError``."""
    await asyncio.to_thread(rewrite_ini, ini, settings)
    await _reload(conninfo)
    logger.info("pgbouncer tuned: %s", ", ".join(settings) or "(no keys)")


def pidfile_of(ini: Path) -> Path:
    """The ini's ``pidfile``, or Neon's ``/tmp/pgbouncer.pid``."""
    try:
        text, _ = _read(ini)
    except (OSError, UnicodeDecodeError):
        return DEFAULT_PIDFILE
    section = None
    for line in text.splitlines():
        header = _SECTION_RE.match(line)
        if header:
            section = header.group(1).lower()
        elif section == "pgbouncer":
            key, sep, value = line.partition("=")
            if sep and key.strip().lower() == "pidfile" and value.strip():
                return Path(value.strip())
    return DEFAULT_PIDFILE


def kill(ini: Path) -> int | None:
    """SIGKILL the pgbouncer named by the pid file (Neon, at termination); its pid."""
    pidfile = pidfile_of(ini)
    try:
        pid = int(_read(pidfile)[0].strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):  # UnicodeDecodeError included
        return None
    if pid <= 0 or comm != "pgbouncer":
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    logger.info("pgbouncer (pid %d) killed", pid)
    return pid
