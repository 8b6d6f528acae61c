"""Where the storage is: pageserver shards and safekeepers, parsed from a spec.

Pure functions of a ``ComputeSpec``, with Neon's fallbacks (``ParsedSpec`` in
``compute.rs``): the pageserver from ``pageserver_connection_info``, else from the
comma list ``pageserver_connstring`` (one URL per shard) with ``shard_stripe_size``,
else from the GUCs ``neon.pageserver_connstring`` and ``neon.stripe_size`` in
``cluster.settings``; the safekeepers from ``safekeeper_connstrings``, else from the
GUC ``neon.safekeepers`` (with its optional ``g#N:`` generation prefix); the tenant
and timeline from the spec, else from ``neon.tenant_id`` / ``neon.timeline_id``.

No I/O. Malformed values raise ``errors.ConfigError`` (HTTP 400); a missing value is
``None`` / empty here and ``checks`` decides whether that is an error.

Connection strings from a spec reach libpq inside compute_ctl, which runs as root, so
``check_libpq_conninfo`` allows only the keys that say where to connect and how to
authenticate over the network (``ALLOWED_CONNINFO_KEYS``). Keys that name local files
(``sslkey``, ``sslcert``, ``sslrootcert``, ``sslcrl``, ``sslkeylogfile``, ``passfile``,
``service``, ...) would make root read or write arbitrary paths and are refused. A
safekeeper address is a plain ``host:port``: nothing there may smuggle URL parameters.
"""

from __future__ import annotations

import dataclasses
import re

from compute_ctl.compute import errors
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "ALLOWED_CONNINFO_KEYS",
    "PageserverShard",
    "Pageservers",
    "Safekeepers",
    "check_libpq_conninfo",
    "pageservers",
    "safekeepers",
    "shard_index",
    "split_host_port",
    "tenant_timeline",
]

_GENERATION_RE = re.compile(r"^g#(\d+):(.*)$")
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]")

# What a spec's connection string may set: where, who, how long, which TLS/auth policy.
# Nothing that names a file on this machine (see the module docstring).
ALLOWED_CONNINFO_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "sslmode",
        "sslnegotiation",
        "sslcompression",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "require_auth",
        "channel_binding",
        "gssencmode",
        "target_session_attrs",
        "load_balance_hosts",
    }
)


def check_libpq_conninfo(value: str, *, what: str) -> None:
    """Raise ``ConfigError`` unless ``value`` parses and sets only allowed keys.

    The message names the refused keys, never a value (it may hold a password).
    psycopg (libpq's parser) is imported here: the operator admits specs with these
    checks, and one without a connection string to check never loads psycopg.
    """
    import psycopg
    import psycopg.conninfo

    try:
        params = psycopg.conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        # libpq's message may quote the string, password included: do not chain it.
        raise errors.ConfigError(f"{what} is not a valid libpq connection string") from None
    refused = sorted(set(params) - ALLOWED_CONNINFO_KEYS)
    if refused:
        raise errors.ConfigError(
            f"{what} sets connection options a spec may not set: {', '.join(refused)} "
            f"(allowed: {', '.join(sorted(ALLOWED_CONNINFO_KEYS))})"
        )


_HEX_ID_RE = re.compile(r"[0-9a-f]{32}")  # fullmatch: "$" would pass a trailing newline


def shard_index(number: int, count: int) -> str:
    """Neon's ``ShardIndex`` display: shard number and shard count, two hex digits each."""
    return f"{number:02x}{count:02x}"


@dataclasses.dataclass(frozen=True)
class PageserverShard:
    """The first pageserver of one shard (Neon talks to the first one only)."""

    number: int
    libpq_url: str | None
    grpc_url: str | None


@dataclasses.dataclass(frozen=True)
class Pageservers:
    """All shards in shard-number order; ``shard_count`` 0 means unsharded."""

    shard_count: int
    stripe_size: int | None
    shards: tuple[PageserverShard, ...]
    prefer_protocol: str = "libpq"

    @property
    def shard0(self) -> PageserverShard:
        return self.shards[0]

    def libpq_urls(self) -> list[str] | None:
        """Every shard's libpq URL, or ``None`` when any shard lacks one (Neon's rule)."""
        urls = [s.libpq_url for s in self.shards]
        return None if any(u is None for u in urls) else [u for u in urls if u is not None]

    def grpc_urls(self) -> list[str] | None:
        urls = [s.grpc_url for s in self.shards]
        return None if any(u is None for u in urls) else [u for u in urls if u is not None]


@dataclasses.dataclass(frozen=True)
class Safekeepers:
    """``host:port`` strings and the membership generation, if any."""

    connstrings: tuple[str, ...]
    generation: int | None = None

    def conf_value(self) -> str:
        """The value of ``neon.safekeepers``: ``[g#N:]sk1,sk2``."""
        prefix = f"g#{self.generation}:" if self.generation is not None else ""
        return prefix + ",".join(self.connstrings)


def _from_info(info: spec_mod.PageserverConnectionInfo) -> Pageservers:
    if info.shard_count < 0 or info.shard_count > 255:
        raise errors.ConfigError(f"pageserver shard_count {info.shard_count} is out of range")
    shards = []
    for number in range(max(info.shard_count, 1)):
        key = shard_index(number, info.shard_count)
        shard = info.shards.get(key)
        if shard is None:
            raise errors.ConfigError(
                f"shard {key} missing from pageserver_connection_info shard map"
            )
        if not shard.pageservers:
            raise errors.ConfigError(f"shard {key} in pageserver_connection_info has no pageserver")
        first = shard.pageservers[0]
        shards.append(
            PageserverShard(number=number, libpq_url=first.libpq_url, grpc_url=first.grpc_url)
        )
    return Pageservers(
        shard_count=info.shard_count,
        stripe_size=info.stripe_size,
        shards=tuple(shards),
        prefer_protocol=info.prefer_protocol,
    )


def _from_connstring(connstring: str, stripe_size: int | None) -> Pageservers:
    urls = [u.strip() for u in connstring.split(",")]
    if not all(urls):
        raise errors.ConfigError("pageserver connstring has an empty entry")
    count = len(urls) if len(urls) > 1 else 0
    shards = tuple(
        PageserverShard(number=i, libpq_url=url, grpc_url=None) for i, url in enumerate(urls)
    )
    return Pageservers(shard_count=count, stripe_size=stripe_size, shards=shards)


def _int_setting(spec: spec_mod.ComputeSpec, name: str) -> int | None:
    value = spec.cluster.setting(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as e:
        raise errors.ConfigError(f"setting {name} must be an integer") from e


def pageservers(spec: spec_mod.ComputeSpec) -> Pageservers | None:
    """The pageserver shards, with Neon's fallbacks; ``None`` when the spec names none."""
    if spec.pageserver_connection_info is not None:
        return _from_info(spec.pageserver_connection_info)
    if spec.pageserver_connstring:
        return _from_connstring(spec.pageserver_connstring, spec.shard_stripe_size)
    guc = spec.cluster.setting("neon.pageserver_connstring")
    if guc:
        return _from_connstring(guc, _int_setting(spec, "neon.stripe_size"))
    return None


def safekeepers(spec: spec_mod.ComputeSpec) -> Safekeepers:
    """The safekeepers: the spec's list, else the ``neon.safekeepers`` GUC."""
    if spec.safekeeper_connstrings:
        return Safekeepers(
            connstrings=tuple(spec.safekeeper_connstrings),
            generation=spec.safekeepers_generation,
        )
    guc = spec.cluster.setting("neon.safekeepers")
    if not guc:
        return Safekeepers(connstrings=(), generation=spec.safekeepers_generation)
    generation = spec.safekeepers_generation
    match = _GENERATION_RE.match(guc)
    if match:
        generation = int(match.group(1))
        guc = match.group(2)
    return Safekeepers(
        connstrings=tuple(s.strip() for s in guc.split(",")),
        generation=generation,
    )


def tenant_timeline(spec: spec_mod.ComputeSpec) -> tuple[str | None, str | None]:
    """Tenant and timeline ids: the spec's fields, else the ``neon.*`` GUCs."""
    tenant = spec.tenant_id or spec.cluster.setting("neon.tenant_id")
    timeline = spec.timeline_id or spec.cluster.setting("neon.timeline_id")
    for name, value in (("tenant id", tenant), ("timeline id", timeline)):
        if value is not None and not _HEX_ID_RE.fullmatch(value):
            raise errors.ConfigError(f"invalid {name}: expected 32 lower-case hex digits")
    return tenant, timeline


def split_host_port(connstring: str) -> tuple[str, int]:
    """A safekeeper's ``host:port`` (IPv6 as ``[::1]:5454``)."""
    host, sep, port = connstring.rpartition(":")
    if not sep or not _HOST_RE.fullmatch(host) or not port.isdigit() or len(port) > 5:
        raise errors.ConfigError(f"invalid safekeeper address {connstring!r}: expected host:port")
    return host.strip("[]"), int(port)
