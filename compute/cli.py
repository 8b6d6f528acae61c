"""The ``compute_ctl`` command line: Neon's flags and environment, validated before any work.

Everything that can be wrong with the invocation is found here, before PGDATA or any port
is touched: unknown or conflicting flags (argparse, exit 2), an unreadable or invalid
config file or control-plane reply (exit 2, naming the field), a spec that admission
refuses (``admission``: exit 2, before PGDATA is touched), a missing binary or OS user,
a PGDATA we must not wipe. Then the node
runs under the HTTP servers, and signals become terminations: SIGTERM/SIGINT a fast
shutdown (a second one escalates), SIGQUIT an immediate one.

Cold start: a config file whose spec runs in local mode starts its ``initdb`` (into the
spare ``<pgdata>.warmup``, never PGDATA) as soon as the flags are checked, while the spec is
validated and the rest of compute_ctl loads; a refused config cancels and removes it. So
pydantic, aiohttp and psycopg are imported lazily here, after that spawn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from compute_ctl.compute import (
    audit_ship,
    errors,
    failpoints,
    liveness,
    logformat,
    neonflags,
    params,
    pgdata,
    pgtools,
)

if TYPE_CHECKING:
    from compute_ctl.compute import admission
    from compute_ctl.compute import node as node_mod

__all__ = ["build_parser", "load_config_file", "main", "params_from_args"]

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="compute_ctl",
        description="Run a PostgreSQL compute from a Neon compute spec.",
    )
    p.add_argument("-D", "--pgdata", required=True, type=Path, help="PGDATA (wiped at start)")
    p.add_argument(
        "-C",
        "--connstr",
        required=True,
        help="local superuser URL, e.g. postgresql://cloud_admin@127.0.0.1:5432/postgres",
    )
    p.add_argument("-i", "--compute-id", required=True, help="this compute's id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", type=Path, help="ComputeConfig JSON file")
    source.add_argument("-p", "--control-plane-uri", help="fetch the config from here")
    p.add_argument(
        "-b",
        "--pgbin",
        default=env.get("POSTGRES_PATH", "postgres"),
        help="postgres binary; its siblings are used too (env POSTGRES_PATH)",
    )
    p.add_argument("-r", "--remote-ext-base-url", help="remote extensions' gateway (HTTP base URL)")
    p.add_argument("--external-http-host", default="0.0.0.0")
    p.add_argument("--external-http-port", type=int, default=3080)
    p.add_argument("--internal-http-port", type=int, default=3081, help="bound to 127.0.0.1")
    p.add_argument("--privileged-role-name", default="neon_superuser")
    p.add_argument("--resize-swap-on-bind", action="store_true", help="no effect (NeonVM only)")
    p.add_argument("--set-disk-quota-for-fs", metavar="MOUNTPOINT", help="no effect (NeonVM only)")
    p.add_argument(
        "--installed-extensions-collection-interval",
        type=int,
        default=3600,
        help="seconds between installed-extensions reports when the spec's "
        "suspend_timeout_seconds is -1 or 0",
    )
    p.add_argument(
        "--dev", action="store_true", help="a signal does not stop pgbouncer/local_proxy"
    )
    p.add_argument(
        "--pgbouncer-ini",
        type=Path,
        help="the pgbouncer.ini pgbouncer_settings go into (default: Neon's, by AUTOSCALING)",
    )
    p.add_argument("--pgbouncer-connstr", help="pgbouncer admin console (default: Neon's)")
    p.add_argument("--local-proxy-dir", type=Path, default=Path("/etc/local_proxy"))
    p.add_argument(
        "--tls-poll-interval", type=float, default=60.0, help="seconds between cert checks"
    )
    neonflags.add_hadron_flags(p)
    p.add_argument("--cgroup", default="neon-postgres", help="cgroup for postgres (AUTOSCALING)")
    p.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    p.add_argument("--filecache-connstr", default=params.DEFAULT_FILECACHE_CONNSTR)
    p.add_argument("--vm-monitor-addr", default="0.0.0.0:10301")
    p.add_argument("--os-user", default="postgres", help="OS user postgres runs as when root")
    p.add_argument(
        "--keep-pgdata",
        action="store_true",
        help="keep an existing valid PGDATA instead of wiping it (persistent volumes)",
    )
    p.add_argument(
        "--trust-superuser-on-loopback",
        action="store_true",
        help="trust the -C superuser on 127.0.0.1 and ::1 as Neon does (every local OS user "
        "becomes a database superuser); default: only over the 0700 unix socket directory",
    )
    p.add_argument("--failpoints", action="store_true", help="enable test failpoints")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve the external API without JWT when no JWKS keys are configured (dev only)",
    )
    p.add_argument(
        "--internal-full-api",
        action="store_true",
        help="serve the whole API, unauthenticated, on the internal port (tests/dev only; "
        "by default it serves only Neon's internal routes and the probes)",
    )
    p.add_argument(
        "--log-format",
        choices=logformat.FORMATS,
        default=env.get("LOG_FORMAT", "text"),
        help="json: one object per line, with compute_id and the HTTP request id",
    )
    p.add_argument("--resync-interval", type=float, default=30.0, help="drift check, seconds")
    p.add_argument("--rsyslog-conf-dir", type=Path, default=Path("/etc/rsyslog.d"))
    p.add_argument("--rsyslogd-pid-file", type=Path, default=Path("/run/rsyslogd.pid"))
    p.add_argument("--rsyslog-work-dir", type=Path, default=Path("/var/log/rsyslog"))
    p.add_argument(
        "--apply-timeout", type=float, default=120.0, help="bound of one configuration, seconds"
    )
    p.add_argument(
        "--failed-exit-delay",
        type=float,
        default=30.0,
        help="seconds a failed compute keeps serving /status before exiting",
    )
    return p


def _ext_base_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parsed = urllib.parse.urlsplit(raw)
    if parsed.query:
        raise errors.ConfigError("--remote-ext-base-url must not have query parameters")
    return raw.rstrip("/") + "/"


def params_from_args(ns: argparse.Namespace, environ: Mapping[str, str]) -> params.Params:
    if ns.http_port is not None:  # Hadron's single-port flag
        ns.external_http_port, ns.internal_http_port = ns.http_port, ns.http_port + 1
    if ns.installed_extensions_collection_interval < 1:
        raise errors.ConfigError("--installed-extensions-collection-interval must be positive")
    for flag in ("external_http_port", "internal_http_port"):
        if not 0 <= getattr(ns, flag) < 65536:
            raise errors.ConfigError(f"--{flag.replace('_', '-')} must be a port number")
    if ns.external_http_port and ns.external_http_port == ns.internal_http_port:
        raise errors.ConfigError("--external-http-port and --internal-http-port must differ")
    result = params.Params(
        pgdata=Path(os.path.abspath(ns.pgdata)),
        connstr=ns.connstr,
        compute_id=ns.compute_id,
        config_path=ns.config,
        control_plane_uri=ns.control_plane_uri,
        pgbin=ns.pgbin,
        external_http_host=ns.external_http_host,
        external_http_port=ns.external_http_port,
        internal_http_port=ns.internal_http_port,
        privileged_role_name=ns.privileged_role_name,
        cgroup=ns.cgroup,
        cgroup_root=ns.cgroup_root,
        filecache_connstr=ns.filecache_connstr,
        vm_monitor_addr=ns.vm_monitor_addr,
        autoscaling="AUTOSCALING" in environ,
        dev=ns.dev,
        os_user=ns.os_user,
        keep_pgdata=ns.keep_pgdata,
        failpoints=ns.failpoints or "FAILPOINTS" in environ,
        allow_unauthenticated=ns.allow_unauthenticated,
        internal_full_api=ns.internal_full_api,
        resync_interval=ns.resync_interval,
        apply_timeout=ns.apply_timeout,
        build_tag=environ.get("BUILD_TAG", "latest"),
        remote_ext_base_url=_ext_base_url(ns.remote_ext_base_url),
        resize_swap_on_bind=ns.resize_swap_on_bind,
        set_disk_quota_for_fs=ns.set_disk_quota_for_fs,
        installed_extensions_collection_interval=ns.installed_extensions_collection_interval,
        failed_exit_delay=ns.failed_exit_delay,
        trust_superuser_on_loopback=ns.trust_superuser_on_loopback,
        pgbouncer_ini=ns.pgbouncer_ini,
        pgbouncer_connstr=ns.pgbouncer_connstr,
        local_proxy_dir=ns.local_proxy_dir,
        tls_poll_interval=ns.tls_poll_interval,
        audit_shipping=audit_ship.Settings(
            endpoint=environ.get("AUDIT_LOGGING_ENDPOINT", ""),
            tls_endpoint=environ.get("AUDIT_LOGGING_TLS_ENDPOINT", ""),
            conf_dir=ns.rsyslog_conf_dir,
            pid_file=ns.rsyslogd_pid_file,
            work_directory=ns.rsyslog_work_dir,
        ),
    )
    neonflags.warn_ineffective(ns)  # only once every flag is known to be valid
    return result


def load_config_file(path: Path, *, rules: admission.Rules) -> admission.AdmittedConfig:
    """Read and admit a ``ComputeConfig`` file; ``ConfigError`` names what is wrong."""
    from compute_ctl.compute import admission

    try:
        text = path.read_text()
    except OSError as e:
        raise errors.ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise errors.ConfigError(f"config file {path} is not valid JSON: {e}") from e
    return admission.admit_config(raw, rules=rules, where=f"config file {path}")


async def _load_config(
    p: params.Params, environ: Mapping[str, str], cplane_requests: list[str]
) -> admission.AdmittedConfig:
    """The config file or the control plane's reply, admitted (the CLI's two entrances).

    ``cplane_requests`` collects each control-plane attempt's status for the node's
    ``compute_ctl_cplane_requests_total`` (the node and its metrics do not exist yet)."""
    from compute_ctl.compute import admission

    rules = admission.Rules.for_params(p)
    if p.config_path is not None:
        return load_config_file(p.config_path, rules=rules)
    from compute_ctl.compute import controlplane

    assert p.control_plane_uri is not None
    config = await controlplane.fetch_config(
        uri=p.control_plane_uri,
        compute_id=p.compute_id,
        token=environ.get("NEON_CONTROL_PLANE_TOKEN"),
        record=cplane_requests.append,
    )
    return admission.admit_config(config, rules=rules, where="control plane reply")


def _check_local(p: params.Params) -> tuple[pgtools.PgTools, failpoints.Failpoints]:
    """What must hold on this machine before anything is touched (no spec needed)."""
    tools = pgtools.PgTools(
        postgres=pgtools.find_pgbin(p.pgbin), user=pgtools.OsUser.resolve(p.os_user)
    )
    tools.tool("initdb")
    pgdata.check_parent_traversable(p.pgdata, tools.user)
    if not (p.keep_pgdata and pgdata.inspect(p.pgdata).kind is pgdata.Existing.VALID):
        pgdata.check_wipe_safe(p.pgdata)
    if p.autoscaling and not (p.cgroup_root / p.cgroup / "cgroup.procs").is_file():
        raise errors.ConfigError(
            f"AUTOSCALING is set but cgroup {p.cgroup_root / p.cgroup} is missing"
        )
    try:
        fps = failpoints.Failpoints.from_env(os.environ.get("FAILPOINTS"), enabled=p.failpoints)
    except ValueError as e:
        raise errors.ConfigError(f"FAILPOINTS: {e}") from e
    return tools, fps


_STORAGE_KEYS = (
    "pageserver_connection_info",
    "pageserver_connstring",
    "safekeeper_connstrings",
    "primary_connstring",
)


def _local_spec_in(path: Path | None) -> bool:
    """A cheap look (plain JSON, no validation) at whether the config will start in local
    mode, i.e. with an initdb. Wrong guesses only waste or skip a prewarm."""
    if path is None:
        return False
    try:
        raw = json.loads(path.read_text())
        spec = raw["spec"]
        settings = spec["cluster"].get("settings") or []
        neon_conf = any(o.get("name") == "neon.pageserver_connstring" for o in settings)
        return not neon_conf and not any(spec.get(key) for key in _STORAGE_KEYS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


async def _speculative_prewarm(
    p: params.Params, tools: pgtools.PgTools
) -> asyncio.Task[bool] | None:
    if not _local_spec_in(p.config_path):
        return None
    if p.keep_pgdata and pgdata.inspect(p.pgdata).kind is pgdata.Existing.VALID:
        return None
    task = asyncio.create_task(
        pgdata.prewarm(pgdata=p.pgdata, tools=tools, superuser=p.local.user, sync=p.keep_pgdata)
    )
    await asyncio.sleep(0)  # let it spawn initdb before the imports below hold the loop
    return task


def _install_signals(node: node_mod.ComputeNode) -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        immediate = sig is signal.SIGQUIT or len(received) > 1
        logger.info("received %s: %s shutdown", sig.name, "immediate" if immediate else "fast")
        node.request_stop("immediate" if immediate else "fast")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, on_signal, sig)


def _check_ports(p: params.Params) -> None:
    """Fail before touching PGDATA if an HTTP port is taken (the servers bind later)."""
    for host, port in (
        ("127.0.0.1", p.internal_http_port),
        (p.external_http_host, p.external_http_port),
    ):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from e


async def _amain(ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    p = params_from_args(ns, environ)
    # Before anything looks at PGDATA: a second compute_ctl on it exits 2 here, untouched.
    lock = liveness.PgdataLock.acquire(p.pgdata, pgdata.warmup_dir(p.pgdata))
    try:
        return await _run(p, environ)
    finally:
        lock.release()


async def _run(p: params.Params, environ: Mapping[str, str]) -> int:
    tools, fps = _check_local(p)
    warm = await _speculative_prewarm(p, tools)
    cplane_requests: list[str] = []  # fetched before the node's metrics exist
    try:
        config = await _load_config(p, environ, cplane_requests)
        _check_ports(p)
    except BaseException:
        if warm is not None:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
        raise
    # The speculative initdb runs as a subprocess while we load the HTTP stack and libpq
    # (the largest imports) here. Not in a thread: importing psycopg in two threads at once
    # can fail with "partially initialized module".
    from compute_ctl.compute import node as node_mod
    from compute_ctl.compute.http import server

    node = node_mod.ComputeNode(p, config=config, failpoints=fps, tools=tools, prewarm=warm)
    for status in cplane_requests:
        node.metrics.cplane_request(rpc="GetConfig", http_status=status)
    _install_signals(node)
    run = asyncio.create_task(node.run())
    try:
        async with server.serving(node, metrics=node.metrics):
            return await run
    finally:
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


def _setup_logging(environ: Mapping[str, str], ns: argparse.Namespace) -> None:
    level = logging.DEBUG if "debug" in environ.get("RUST_LOG", "").lower() else logging.INFO
    logformat.setup(level=level, fmt=ns.log_format, compute_id=ns.compute_id or "")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``compute_ctl`` console script; returns the process exit code."""
    environ = dict(os.environ)
    parser = build_parser(environ)
    ns = parser.parse_args(argv)
    _setup_logging(environ, ns)
    try:
        return asyncio.run(_amain(ns, environ))
    except errors.ConfigError as e:
        print(f"compute_ctl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # e.g. an HTTP port already in use
        print(f"compute_ctl: error: {e}", file=sys.stderr)
        return 1
