"""Shipping the audit files with rsyslog, and deleting old ones (Neon's ``rsyslog.rs``).

For the levels that write files (Extended, Full and the deprecated Hipaa), Neon's start
configures an rsyslogd, supervised outside compute_ctl, to read ``<pgdata>/log/*.log``
(``imfile``, tag ``pgaudit_log``, facility ``local5``, one message per line that starts
with a timestamp) and forward each line, wrapped in JSON with ``endpoint_id``,
``project_id`` and ``msg``, as RFC 5424 over TCP (TLS when ``AUDIT_LOGGING_TLS_ENDPOINT``
is set) to ``AUDIT_LOGGING_ENDPOINT``. With neither endpoint the start fails. Then
rsyslogd is restarted (it reloads its configuration only on restart: SIGHUP merely
reopens files) and its supervisor is expected to bring it back within 5 s.

- ``target``: the endpoint from the two environment values (``Params``).
- ``render``: the drop-in file's text; ``configure``: write it and restart rsyslogd.
- ``collect_garbage``: delete ``audit*.log`` files not written to for 15 minutes (Neon runs
  this every 60 s from the start, with the ``compute_audit_log_dir_size`` gauge: see
  ``audit.watch_log_dir``).

Differences from Neon (docs/audit.md says why): the drop-in's path, rsyslogd's pid file
and its work directory are parameters; only the rsyslogd named by the pid file is
restarted (Neon kills every process named ``rsyslogd`` on the host); the lines go
through a ruleset of their own, so they are forwarded and not also written to the host's
local syslog files, and no other ``local5`` message is forwarded; the line-start pattern
accepts any time zone name (Neon's only ``GMT``, and with any other ``log_timezone``
nothing would be shipped); a partial last message is sent after ``READ_TIMEOUT`` seconds
instead of waiting for the next line; ``endpoint_id`` and ``project_id`` are escaped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
import os
import signal
import stat
import time
from pathlib import Path

from compute_ctl.compute import errors

__all__ = [
    "CONF_NAME",
    "GC_AGE_SECONDS",
    "Settings",
    "ShippingError",
    "Target",
    "collect_garbage",
    "configure",
    "read_pid",
    "render",
    "restart_rsyslogd",
    "target",
]

logger = logging.getLogger(__name__)

CONF_NAME = "compute_audit_rsyslog.conf"  # Neon: /etc/rsyslog.d/compute_audit_rsyslog.conf
GC_AGE_SECONDS = 15 * 60  # Neon: find -mmin +15 (three pgaudit.log_rotation_age periods)
RESTART_TIMEOUT = 5.0  # Neon: how long the supervisor may take to bring rsyslogd back
READ_TIMEOUT = 5  # seconds before imfile sends a message no next line has closed
# A message starts with pgauditlogtofile's timestamp, "2024-01-31 12:34:56.789 UTC,".
_START_REGEX = (
    "^[[:digit:]]{4}-[[:digit:]]{2}-[[:digit:]]{2} "
    "[[:digit:]]{2}:[[:digit:]]{2}:[[:digit:]]{2}[.][[:digit:]]{3} [^,]+,"
)


class ShippingError(errors.ComputeError):
    """The audit shipping could not be set up: the start fails (as Neon's)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """compute_ctl's flags and environment for the shipping (``Params.audit_shipping``)."""

    endpoint: str = ""  # AUDIT_LOGGING_ENDPOINT, host:port
    tls_endpoint: str = ""  # AUDIT_LOGGING_TLS_ENDPOINT, host:port
    # Beyond Neon, which has these three fixed: the drop-in's directory, the pid file of
    # the rsyslogd to restart, and the directory of imfile's read positions.
    conf_dir: Path = Path("/etc/rsyslog.d")
    pid_file: Path = Path("/run/rsyslogd.pid")
    work_directory: Path = Path("/var/log/rsyslog")
    # Neon's 5 s for the supervisor to bring rsyslogd back (tests on a loaded host: more).
    restart_timeout: float = RESTART_TIMEOUT


@dataclasses.dataclass(frozen=True)
class Target:
    """Where rsyslogd forwards the audit lines."""

    host: str
    port: int
    tls: bool


def _parse(value: str, *, name: str, tls: bool) -> Target:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [IPv6]:port
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ShippingError(f"{name} must be host:port, got {value!r}")
    if any(c.isspace() or c in "\"'\\" for c in host):
        raise ShippingError(f"{name} has an invalid host {host!r}")
    return Target(host=host, port=int(port), tls=tls)


def target(*, plain: str, tls: str) -> Target:
    """Neon's choice: the TLS endpoint if set, else the plain one; neither is an error."""
    if tls:
        return _parse(tls, name="AUDIT_LOGGING_TLS_ENDPOINT", tls=True)
    if plain:
        return _parse(plain, name="AUDIT_LOGGING_ENDPOINT", tls=False)
    raise ShippingError("AUDIT_LOGGING_ENDPOINT and AUDIT_LOGGING_TLS_ENDPOINT are both empty")


def _quote(value: str) -> str:
    """A RainerScript string constant."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(
    *,
    log_directory: Path,
    work_directory: Path,
    endpoint_id: str,
    project_id: str,
    to: Target,
) -> str:
    """The rsyslog drop-in that ships ``log_directory/*.log`` to ``to``."""
    stream = (
        (
            '\n    StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"'
            f" StreamDriverPermittedPeers={_quote(to.host)}"
        )
        if to.tls
        else ""
    )
    return f"""\
# Managed by compute_ctl: ship the audit files to {to.host}:{to.port}.
module(load="imfile")
global(workDirectory={_quote(str(work_directory))})

# RFC 5424, the message a JSON object (endpoint_id, project_id, msg).
template(name="PgAuditLog" type="string"
    string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% - - - - %$.json_log%")

ruleset(name="compute_audit") {{
  set $.json_log!endpoint_id = {_quote(endpoint_id)};
  set $.json_log!project_id = {_quote(project_id)};
  set $.json_log!msg = $msg;
  action(type="omfwd" target={_quote(to.host)} port="{to.port}" protocol="tcp"
    template="PgAuditLog"{stream})
}}

# Audit lines may span several lines: each message starts with a timestamp.
input(type="imfile" File={_quote(str(log_directory / "*.log"))}
  Tag="pgaudit_log" Severity="info" Facility="local5" ruleset="compute_audit"
  readTimeout="{READ_TIMEOUT}" startmsg.regex={_quote(_START_REGEX)})
"""


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (rsyslogd may start at any moment and read it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_pid(pid_file: Path) -> int | None:
    """The live process named by ``pid_file``, if any."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


async def restart_rsyslogd(pid_file: Path, *, timeout: float = RESTART_TIMEOUT) -> int:
    """Stop the rsyslogd named by ``pid_file`` and wait for its supervisor to start a new
    one (a new live pid in the file); return the new pid."""
    old = read_pid(pid_file)
    if old is None:
        raise ShippingError(f"rsyslogd is not running (no live pid in {pid_file})")
    logger.info("restarting rsyslogd (pid %d) to load the audit configuration", old)
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        new = read_pid(pid_file)
        if new is not None and new != old:
            logger.info("rsyslogd is back with pid %d", new)
            return new
        if time.monotonic() >= deadline:
            raise ShippingError(f"rsyslogd did not come back within {timeout:g} s after a restart")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def configure(
    settings: Settings, *, pgdata: Path, endpoint_id: str | None, project_id: str | None
) -> None:
    """Write the drop-in into ``settings.conf_dir`` and restart rsyslogd (errors are fatal)."""
    to = target(plain=settings.endpoint, tls=settings.tls_endpoint)
    path = settings.conf_dir / CONF_NAME
    text = render(
        log_directory=pgdata / "log",
        work_directory=settings.work_directory,
        endpoint_id=endpoint_id or "",
        project_id=project_id or "",
        to=to,
    )
    try:
        await asyncio.to_thread(_write, path, text)
    except OSError as e:
        raise ShippingError(f"cannot write {path}: {e.strerror}") from e
    logger.info("audit shipping to %s:%d configured in %s", to.host, to.port, path)
    await restart_rsyslogd(settings.pid_file, timeout=settings.restart_timeout)


def collect_garbage(log_directory: Path, *, now: float | None = None) -> list[Path]:
    """Delete ``audit*.log`` files under ``log_directory`` last written more than
    ``GC_AGE_SECONDS`` ago (Neon's ``find -name 'audit*.log' -mmin +15 -delete``, which
    bounds the disk while trusting rsyslogd to have shipped them by then).

    ``log_directory`` is in PGDATA, the postgres OS user's: no link is followed (not
    ``log_directory`` itself either), and only regular files are deleted, relative to
    their directory's descriptor, so root never deletes a file outside it."""
    cutoff = (time.time() if now is None else now) - GC_AGE_SECONDS
    removed = []
    for root, _dirs, files, dir_fd in os.fwalk(log_directory, follow_symlinks=False):
        for name in fnmatch.filter(files, "audit*.log"):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(Path(root) / name)
            except OSError:  # gone meanwhile
                continue
    if removed:
        logger.info("deleted %d audit files older than 15 minutes", len(removed))
    return removed
