"""The operator's static settings: a frozen dataclass built from flags and environment.

Flags win over environment variables, which win over defaults. In a pod the resource name
and namespace come from the environment: ``POD_NAMESPACE`` through the downward API, and
the name either explicitly (``COMPUTE_SPEC_NAME``, the chart) or from ``POD_NAME`` (the
kustomize base): a StatefulSet's pod is ``<statefulset>-<ordinal>``, and the StatefulSet
and its ComputeSpec share one name, which a kustomize ``namePrefix``/``nameSuffix``
renames together. ``--compute-id`` (the JWT's ``compute_id`` claim, which must equal
compute_ctl's ``--compute-id``) defaults to ``COMPUTE_ID``, then to the name.
``--server`` exists for test API servers (kmock) and points kopf at an explicit URL
instead of the in-cluster service account or ``KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ConfigError", "OperatorConfig", "parse"]

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigError(ValueError):
    """Bad flags or environment: the message says which."""


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    name: str  # the ComputeSpec resource this sidecar manages
    namespace: str
    compute_url: str = "http://127.0.0.1:3080"  # compute_ctl's external API (JWT)
    compute_id: str = ""  # the JWT's compute_id claim; "" means ``name``
    key_file: Path | None = None  # the private key signing the operator's JWTs
    resync_interval: float = 30.0  # periodic reconcile, seconds
    watch_interval: float = 1.0  # how often GET /status looks for a changed compute
    secret_interval: float = 10.0  # how often referenced Secrets are read for a rotation
    busy_timeout: float = 120.0  # how long to retry /configure while compute_ctl is busy
    configure_timeout: float = 300.0  # one /configure (a first start runs initdb)
    retry_delay: float = 5.0
    delete_retries: int = 5  # terminate attempts before deletion proceeds anyway
    server: str | None = None  # explicit API server URL (tests); else in-cluster/kubeconfig
    insecure: bool = False
    token_file: Path | None = None
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    log_level: str = "INFO"
    log_format: str = "text"  # or "json" (compute.logformat)
    # What admission must know of the compute: its -C user and database, and its
    # --privileged-role-name (the compute's own admission has the final word).
    compute_superuser: str = "cloud_admin"
    compute_dbname: str = "postgres"
    privileged_role: str = "neon_superuser"


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="compute-ctl-operator",
        description="The kopf sidecar reconciling one ComputeSpec resource with compute_ctl.",
    )
    parser.add_argument("--name", default=env.get("COMPUTE_SPEC_NAME"))
    parser.add_argument("--pod-name", default=env.get("POD_NAME"))
    parser.add_argument("--compute-id", default=env.get("COMPUTE_ID"))
    parser.add_argument("--key-file", type=Path, default=env.get("OPERATOR_KEY_FILE"))
    parser.add_argument("--namespace", "-n", default=env.get("POD_NAMESPACE"))
    parser.add_argument(
        "--compute-url", default=env.get("COMPUTE_CTL_URL", OperatorConfig.compute_url)
    )
    parser.add_argument("--resync-interval", type=float, default=OperatorConfig.resync_interval)
    parser.add_argument("--watch-interval", type=float, default=OperatorConfig.watch_interval)
    parser.add_argument(
        "--secret-interval",
        type=float,
        default=OperatorConfig.secret_interval,
        help="seconds between reads of the Secrets spec.credentials references (rotation)",
    )
    parser.add_argument("--busy-timeout", type=float, default=OperatorConfig.busy_timeout)
    parser.add_argument("--configure-timeout", type=float, default=OperatorConfig.configure_timeout)
    parser.add_argument("--retry-delay", type=float, default=OperatorConfig.retry_delay)
    parser.add_argument("--delete-retries", type=int, default=OperatorConfig.delete_retries)
    parser.add_argument("--server", default=env.get("KUBERNETES_API_URL"))
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--liveness", default=env.get("OPERATOR_LIVENESS"))
    parser.add_argument("--log-level", default=env.get("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=env.get("LOG_FORMAT", "text")
    )
    parser.add_argument(
        "--compute-superuser",
        default=env.get("COMPUTE_SUPERUSER", OperatorConfig.compute_superuser),
        help="the user of compute_ctl's -C (admission refuses roles and deltas naming it)",
    )
    parser.add_argument(
        "--compute-dbname",
        default=env.get("COMPUTE_DBNAME", OperatorConfig.compute_dbname),
        help="the database of compute_ctl's -C (no delta may drop or rename it)",
    )
    parser.add_argument(
        "--privileged-role-name",
        default=env.get("COMPUTE_PRIVILEGED_ROLE", OperatorConfig.privileged_role),
        help="compute_ctl's --privileged-role-name",
    )
    args = parser.parse_args(list(argv))
    namespace = args.namespace or _service_account_namespace()
    name = args.name or _statefulset_of(args.pod_name)
    if not name:
        raise ConfigError(
            "the ComputeSpec name is required: --name/COMPUTE_SPEC_NAME, or "
            "--pod-name/POD_NAME of a StatefulSet's pod (<name>-<ordinal>)"
        )
    if not namespace:
        raise ConfigError("the namespace is required: --namespace or POD_NAMESPACE")
    if (
        args.resync_interval <= 0
        or args.watch_interval <= 0
        or args.secret_interval <= 0
        or args.busy_timeout <= 0
        or args.configure_timeout <= 0
    ):
        raise ConfigError("intervals and timeouts must be positive")
    return OperatorConfig(
        name=name,
        compute_id=args.compute_id or name,
        key_file=Path(args.key_file) if args.key_file else None,
        namespace=namespace,
        compute_url=args.compute_url,
        resync_interval=args.resync_interval,
        watch_interval=args.watch_interval,
        secret_interval=args.secret_interval,
        busy_timeout=args.busy_timeout,
        configure_timeout=args.configure_timeout,
        retry_delay=args.retry_delay,
        delete_retries=args.delete_retries,
        server=args.server,
        insecure=args.insecure,
        token_file=args.token_file,
        liveness=args.liveness,
        log_level=args.log_level.upper(),
        log_format=args.log_format,
        compute_superuser=args.compute_superuser,
        compute_dbname=args.compute_dbname,
        privileged_role=args.privileged_role_name,
    )


def _statefulset_of(pod_name: str | None) -> str | None:
    """``compute-1-0`` -> ``compute-1``; ``None`` for anything not ``<name>-<ordinal>``."""
    if not pod_name:
        return None
    base, _, ordinal = pod_name.rpartition("-")
    return base if base and ordinal.isdigit() else None


def _service_account_namespace() -> str | None:
    try:
        return _SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
