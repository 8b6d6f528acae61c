"""Rendering of ``postgresql.conf`` and ``pg_hba.conf`` from a spec: pure text, no I/O.

``postgresql.conf`` follows Neon's order (``compute_tools/src/config.rs``)::

    cluster.postgresql_conf, verbatim
    storage lines (neon.pageserver_connstring, neon.safekeepers, ids; none in local mode)
    ssl = on, ssl_cert_file, ssl_key_file (TLS in effect: ``tls``)
    lc_messages/lc_monetary/lc_time/lc_numeric = 'C.UTF-8'
    local-mode lines (ours, see below)
    neon.compute_mode (Neon storage only); hot_standby + recovery_target_lsn (Static),
        hot_standby (Replica)
    dynamic_shared_memory_type = mmap (when the kernel forbids overcommit)
    neon.privileged_role_name (Neon storage only)
    # Managed by compute_ctl: begin
    cluster.settings, one ``name = value`` per line
    # Managed by compute_ctl: end
    the audit block (``audit.conf_lines``; none when audit is Disabled)
    neon.extension_server_port (Neon storage only)
    neon.disable_logical_replication_subscribers=true|false (every mode, as Neon; an
        inert placeholder on vanilla PostgreSQL)
    log_destination='stderr,syslog' (when ``logs_export_host`` is set)
    include_if_exists = 'compute_ctl_temp_override.conf'      (last as written; after a
        Primary start ``startconf.enable_subscribers`` may append one line after it)

Later lines win in postgresql.conf, so ``cluster.settings`` override anything above them.

Local-mode lines: vanilla PostgreSQL run by compute_ctl needs two settings Neon's images
get from elsewhere, and both are written only when the spec sets neither:

- ``port``: taken from ``-C`` (a spec's ``port`` setting must agree with ``-C``; ``admission``);
- ``unix_socket_directories``: Debian's compiled-in ``/var/run/postgresql`` may not exist or
  not be writable by the OS user, so the socket goes into a directory postgres owns
  (by default PGDATA itself, which is 0700: only the OS user and root reach the socket).

Quoting by ``vartype`` (Neon's ``GenericOption``): ``string`` values are single-quoted with
``'`` doubled and backslashes escaped; other vartypes are written raw, except that a value
which is not a plain token is quoted too, so no value can inject a second line; an option
without a value is written as its bare name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from compute_ctl.compute import audit, errors, tls
from compute_ctl.compute import spec as spec_mod

__all__ = [
    "MANAGED_BEGIN",
    "MANAGED_END",
    "OVERRIDE_FILE",
    "ConfContext",
    "conf_text_sets",
    "escape_conf_value",
    "render_hba",
    "render_option",
    "render_postgresql_conf",
    "spec_sets",
]

MANAGED_BEGIN = "# Managed by compute_ctl: begin"
MANAGED_END = "# Managed by compute_ctl: end"
OVERRIDE_FILE = "compute_ctl_temp_override.conf"

_GUC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*")
_RAW_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:+\-]+")
_LOCALE_SETTINGS = ("lc_messages", "lc_monetary", "lc_time", "lc_numeric")


def escape_conf_value(value: str) -> str:
    """Single-quote a value for postgresql.conf (Neon's ``escape_conf_value``).

    PostgreSQL's conf scanner reads ``''`` as a quote and processes backslash escapes, so
    backslashes are doubled and line breaks become ``\\n``/``\\r`` (a raw newline would end
    the line and let the rest of the value be read as a new setting).
    """
    escaped = (
        value.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n").replace("\r", "\\r")
    )
    return f"'{escaped}'"


def render_option(option: spec_mod.GenericOption) -> str:
    """One ``name = value`` line of the managed block."""
    # fullmatch: with match, "$" also matches before a final newline ("work_mem\n").
    if not _GUC_NAME_RE.fullmatch(option.name):
        raise errors.ConfigError(f"invalid setting name {option.name!r}")
    if option.value is None:
        return option.name
    if option.vartype == "string" or not _RAW_TOKEN_RE.fullmatch(option.value):
        return f"{option.name} = {escape_conf_value(option.value)}"
    return f"{option.name} = {option.value}"


def conf_text_sets(text: str | None, name: str) -> bool:
    """Whether a verbatim conf text has a line setting ``name`` (comments ignored)."""
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*(=|\s)", re.IGNORECASE)
    return any(pattern.match(line) for line in (text or "").splitlines())


@dataclasses.dataclass(frozen=True)
class ConfContext:
    """What the renderer needs besides the spec; the caller gathers it (I/O happens there)."""

    privileged_role: str = "neon_superuser"
    internal_port: int = 3081
    # The neon.* storage lines (``storage.neon_conf_lines``); empty in local mode.
    storage_lines: Sequence[str] = ()
    # Local mode: the -C port and the unix socket directory, written only if the spec
    # does not set them. None means "do not write".
    local_port: int | None = None
    socket_dir: str | None = None
    # /proc/sys/vm/overcommit_memory == 2: Neon switches DSM to mmap.
    overcommit_strict: bool = False
    # TLS in effect (``tls.in_effect``): the ssl lines.
    tls: bool = False


def spec_sets(spec: spec_mod.ComputeSpec, name: str) -> bool:
    settings = spec.cluster.settings or []
    return any(o.name == name for o in settings) or conf_text_sets(
        spec.cluster.postgresql_conf, name
    )


def _mode_lines(spec: spec_mod.ComputeSpec, *, neon_storage: bool) -> Iterable[str]:
    if neon_storage:
        yield f"neon.compute_mode={spec.mode.type_name}"
    if spec.mode.kind == "Static":
        yield "hot_standby=on"
        yield f"recovery_target_lsn={escape_conf_value(spec.mode.lsn or '0/0')}"
    elif spec.mode.kind == "Replica":
        yield "hot_standby=on"


def render_postgresql_conf(spec: spec_mod.ComputeSpec, context: ConfContext) -> str:
    """The whole ``postgresql.conf`` for ``spec``, in Neon's order (module docstring)."""
    neon_storage = spec.has_neon_storage()
    lines: list[str] = []
    if spec.cluster.postgresql_conf:
        lines.extend(spec.cluster.postgresql_conf.rstrip("\n").split("\n"))
    lines.extend(context.storage_lines)
    if context.tls:
        lines.extend(tls.conf_lines())
    lines.extend(f"{name}='C.UTF-8'" for name in _LOCALE_SETTINGS)
    if context.local_port is not None and not spec_sets(spec, "port"):
        lines.append(f"port = {context.local_port}")
    if context.socket_dir is not None and not spec_sets(spec, "unix_socket_directories"):
        lines.append(f"unix_socket_directories = {escape_conf_value(context.socket_dir)}")
    lines.extend(_mode_lines(spec, neon_storage=neon_storage))
    if context.overcommit_strict:
        lines.append("dynamic_shared_memory_type = mmap")
    if neon_storage:
        lines.append(f"neon.privileged_role_name={escape_conf_value(context.privileged_role)}")
    lines.append(MANAGED_BEGIN)
    lines.extend(render_option(option) for option in spec.cluster.settings or [])
    lines.append(MANAGED_END)
    lines.extend(audit.conf_lines(spec))
    if neon_storage:
        lines.append(f"neon.extension_server_port={context.internal_port}")
    flag = "true" if spec.drop_subscriptions_before_start else "false"
    lines.append(f"neon.disable_logical_replication_subscribers={flag}")
    if spec.logs_export_host:
        lines.append("log_destination='stderr,syslog'")
    lines.append(f"include_if_exists = {escape_conf_value(OVERRIDE_FILE)}")
    return "\n".join(lines) + "\n"


def _hba_name(name: str) -> str:
    # pg_hba.conf quotes names with double quotes; params rejects names containing them.
    return '"' + name + '"'


def render_hba(*, superuser: str, loopback: bool = False) -> str:
    """``pg_hba.conf``: the superuser trusted over the unix socket, md5 everywhere else.

    compute_ctl connects as the ``-C`` superuser without a password, as Neon's computes do.
    Neon also trusts that user on 127.0.0.1 and ::1, which inside its VMs is harmless but
    on a shared host makes every local OS user a database superuser; so by default it is
    trusted only over the unix socket, whose directory is 0700 (the OS user and root), and
    ``loopback`` (``--trust-superuser-on-loopback``) restores Neon's lines. Every other
    login goes through Neon's ``host all all all md5`` (which upgrades to SCRAM for SCRAM
    verifiers). The first matching line wins.
    """
    user = _hba_name(superuser)
    rows = [("local", "all", user, "", "trust")]
    if loopback:
        rows += [
            ("host", "all", user, "127.0.0.1/32", "trust"),
            ("host", "all", user, "::1/128", "trust"),
        ]
    rows.append(("host", "all", "all", "all", "md5"))
    lines = ["# Written by compute_ctl at every start; edits are lost."]
    lines.extend(
        " ".join(
            f"{col:<{width}}" for col, width in zip(row, (6, 5, 16, 14, 5), strict=True)
        ).rstrip()
        for row in rows
    )
    return "\n".join(lines) + "\n"
