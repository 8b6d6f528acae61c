"""Static settings of one compute_ctl process: what the CLI flags and environment say.

``Params`` is built once by ``cli`` and never changes; everything that changes at run time
lives in ``state.ComputeState``. This module also owns the parsing of ``-C`` (the local
superuser URL) because several modules need its user and port. No I/O here.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from pathlib import Path

from compute_ctl.compute import audit_ship, errors

__all__ = ["DEFAULT_FILECACHE_CONNSTR", "LocalConn", "Params", "parse_connstr"]

DEFAULT_FILECACHE_CONNSTR = (
    "host=localhost port=5432 dbname=postgres user=cloud_admin sslmode=disable "
    "application_name=vm-monitor"
)
PRIVILEGED_ROLE_RE = re.compile(r"^[a-z_]+$")
# Names that go into pg_hba.conf unquoted-safe after double-quoting: no quotes, no blanks.
_HBA_SAFE_NAME_RE = re.compile(r'^[^"\s]+$')


@dataclasses.dataclass(frozen=True)
class LocalConn:
    """What ``-C`` tells us: the superuser compute_ctl connects as, and where."""

    user: str
    host: str
    port: int
    dbname: str


_KV_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def _parse_keywords(connstr: str) -> dict[str, str]:
    """libpq's ``key=value`` form (values optionally single-quoted with backslash escapes)."""
    fields: dict[str, str] = {}
    pos = 0
    while connstr[pos:].strip():
        match = _KV_RE.match(connstr, pos)
        if match is None:
            raise errors.ConfigError(f"-C/--connstr: cannot parse near {connstr[pos : pos + 20]!r}")
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[match.group(1)] = value
        pos = match.end()
    return fields


def _parse_url(connstr: str) -> dict[str, str]:
    """libpq's URI form: ``postgresql://[user[:password]@][host][:port][/dbname][?k=v]``."""
    parts = urllib.parse.urlsplit(connstr)
    fields: dict[str, str] = {}
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if userinfo:
        fields["user"] = urllib.parse.unquote(userinfo.split(":", 1)[0])
    first = hosts.split(",", 1)[0]
    if first.startswith("["):  # [IPv6]:port
        host, _, rest = first[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = first.partition(":")
    if host:
        fields["host"] = urllib.parse.unquote(host)
    if port:
        fields["port"] = port
    if parts.path.strip("/"):
        fields["dbname"] = urllib.parse.unquote(parts.path.lstrip("/"))
    fields.update(urllib.parse.parse_qsl(parts.query))
    return fields


def parse_connstr(connstr: str) -> LocalConn:
    """Parse ``-C`` (a URL or a ``key=value`` string); raise ``ConfigError`` naming the flaw.

    A small parser of libpq's two forms rather than psycopg's, so that validating flags
    does not pay for loading libpq (start-up time is part of the cold start).
    """
    if connstr.startswith(("postgresql://", "postgres://")):
        parts = _parse_url(connstr)
    else:
        parts = _parse_keywords(connstr)
    user = parts.get("user", "")
    if not user:
        raise errors.ConfigError(
            "-C/--connstr must name the superuser, e.g. postgresql://cloud_admin@..."
        )
    if not _HBA_SAFE_NAME_RE.match(user):
        raise errors.ConfigError("-C/--connstr user must not contain quotes or blanks")
    raw_port = parts.get("port") or "5432"
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise errors.ConfigError(f"-C/--connstr has an invalid port {raw_port!r}")
    return LocalConn(
        user=user,
        host=parts.get("host") or "localhost",
        port=int(raw_port),
        dbname=parts.get("dbname") or "postgres",
    )


@dataclasses.dataclass(frozen=True)
class Params:
    """The CLI's flags and environment; see ``cli`` for their meaning."""

    pgdata: Path
    connstr: str = dataclasses.field(repr=False)  # -C: may hold the superuser's password
    compute_id: str
    config_path: Path | None = None
    control_plane_uri: str | None = None
    pgbin: str = "postgres"
    external_http_host: str = "0.0.0.0"
    external_http_port: int = 3080
    internal_http_port: int = 3081
    privileged_role_name: str = "neon_superuser"
    cgroup: str = "neon-postgres"
    cgroup_root: Path = Path("/sys/fs/cgroup")
    filecache_connstr: str = DEFAULT_FILECACHE_CONNSTR
    vm_monitor_addr: str = "0.0.0.0:10301"
    autoscaling: bool = False
    dev: bool = False
    os_user: str = "postgres"
    keep_pgdata: bool = False
    failpoints: bool = False
    allow_unauthenticated: bool = False
    # Beyond Neon's: the internal port serves the whole API (tests, local development).
    internal_full_api: bool = False
    resync_interval: float = 30.0
    build_tag: str = "latest"
    # Never in repr (below too): the URL and the conninfo may hold a password.
    remote_ext_base_url: str | None = dataclasses.field(default=None, repr=False)
    resize_swap_on_bind: bool = False
    set_disk_quota_for_fs: str | None = None
    installed_extensions_collection_interval: int = 3600
    # Beyond Neon: how long a compute whose start failed keeps serving /status before it
    # exits (Neon: 30 s, so the control plane can read the error). /terminate ends it early.
    failed_exit_delay: float = 30.0
    # Beyond Neon: trust the -C superuser on 127.0.0.1/::1 too (Neon's pg_hba.conf). Off by
    # default: then only the 0700 socket directory reaches it, and compute_ctl connects
    # through that socket (``superuser_conninfo``).
    trust_superuser_on_loopback: bool = False
    # Beyond Neon: the bound of one configuration attempt (conf, reload, catalog apply).
    # A failed attempt is answered 500 and retried with backoff; the compute stays running.
    apply_timeout: float = 120.0
    # pgbouncer, local_proxy and TLS (docs/pgbouncer-tls.md): None means Neon's paths.
    pgbouncer_ini: Path | None = None
    pgbouncer_connstr: str | None = dataclasses.field(default=None, repr=False)
    local_proxy_dir: Path = Path("/etc/local_proxy")
    tls_poll_interval: float = 60.0
    # Neon's AUDIT_LOGGING_*ENDPOINT, and (beyond Neon) the rsyslog paths: audit_ship.
    audit_shipping: audit_ship.Settings = dataclasses.field(default_factory=audit_ship.Settings)

    @property
    def local(self) -> LocalConn:
        return parse_connstr(self.connstr)

    @functools.cached_property
    def _superuser_conninfos(self) -> dict[str, str]:
        return {}

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        """How compute_ctl itself reaches its postgres as the ``-C`` superuser, for ``dbname``.

        By default over the unix socket in the private socket directory, the only place
        pg_hba.conf trusts that user; with ``--trust-superuser-on-loopback``, ``-C`` as given.
        Built once per database: libpq's conninfo parsing was a visible share of a
        reconfiguration's CPU time.
        """
        built = self._superuser_conninfos.get(dbname)
        if built is None:
            built = self._superuser_conninfos[dbname] = self._build_superuser_conninfo(dbname)
        return built

    def _build_superuser_conninfo(self, dbname: str) -> str:
        import psycopg.conninfo  # lazily: libpq loads off the start-up path (cli)

        from compute_ctl.compute import pgdata

        fields = psycopg.conninfo.conninfo_to_dict(self.connstr)
        fields["dbname"] = dbname
        if not self.trust_superuser_on_loopback:
            fields.pop("hostaddr", None)
            fields["host"] = pgdata.socket_dir_for(self.pgdata)
        return psycopg.conninfo.make_conninfo("", **fields)

    def filecache_conninfo(self) -> str:
        """The vm-monitor's connection: Neon's default (``cloud_admin`` on localhost) goes
        through the socket like every other connection of ours, unless loopback is trusted;
        an explicit ``--filecache-connstr`` is used as given."""
        if self.filecache_connstr != DEFAULT_FILECACHE_CONNSTR or self.trust_superuser_on_loopback:
            return self.filecache_connstr
        import psycopg.conninfo  # lazily, as above

        return psycopg.conninfo.make_conninfo(
            self.superuser_conninfo(), application_name="vm-monitor"
        )

    def __post_init__(self) -> None:
        if not PRIVILEGED_ROLE_RE.match(self.privileged_role_name):
            raise errors.ConfigError(
                f"--privileged-role-name {self.privileged_role_name!r} must match ^[a-z_]+$"
            )
        parse_connstr(self.connstr)
        if self.resync_interval <= 0:
            raise errors.ConfigError("--resync-interval must be positive")
        if self.apply_timeout <= 0:
            raise errors.ConfigError("--apply-timeout must be positive")
        if self.tls_poll_interval <= 0:
            raise errors.ConfigError("--tls-poll-interval must be positive")
