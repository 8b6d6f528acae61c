"""``compute-ctl-operator`` / ``python -m compute_ctl.operator``: run the kopf sidecar.

Parses flags into ``OperatorConfig``, opens the compute_ctl client and runs kopf in this
process's main thread and loop (so SIGTERM stops it gracefully). It shares no loop with
compute_ctl, which is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from compute_ctl.compute import admission, logformat
from compute_ctl.operator import (
    client,
    clientlibs,
    config,
    credentials,
    kubeapi,
    kubesecrets,
    kubestatus,
    reconcile,
)

logger = logging.getLogger(__name__)


async def run(cfg: config.OperatorConfig) -> None:
    clientlibs.skip()  # before kopf's first import
    import kopf

    from compute_ctl.operator import handlers

    auth = None
    if cfg.key_file is not None:
        auth = credentials.TokenSource(cfg.key_file, compute_id=cfg.compute_id).header
    settings = handlers.build_settings(cfg)
    api = kubeapi.ApiSession(login=lambda: handlers.login(cfg, settings=settings))
    secrets = kubesecrets.SecretReader(namespace=cfg.namespace, api=api)
    writer = kubestatus.StatusWriter(namespace=cfg.namespace, api=api)
    async with (
        client.ComputeClient(
            cfg.compute_url, configure_timeout=cfg.configure_timeout, auth=auth
        ) as compute,
        contextlib.aclosing(api),
    ):
        rules = admission.Rules(
            privileged_role=cfg.privileged_role,
            superuser=cfg.compute_superuser,
            maintenance_db=cfg.compute_dbname,
        )
        reconciler = reconcile.Reconciler(
            compute,
            busy_timeout=cfg.busy_timeout,
            retry_delay=cfg.retry_delay,
            rules=rules,
            secrets=secrets,
            secret_interval=cfg.secret_interval,
        )
        await kopf.operator(
            registry=handlers.build_registry(cfg, reconciler, writer),
            settings=settings,
            standalone=True,
            clusterwide=False,
            namespaces=[cfg.namespace],
            liveness_endpoint=cfg.liveness,
        )


def _quiet_ticks(record: logging.LogRecord) -> bool:
    """Drop kopf's per-tick lines of the resync timer (``Timer 'resync' succeeded``)."""
    message = record.getMessage()
    return not (message.startswith("Timer 'resync' ") and record.levelno <= logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cfg = config.parse(sys.argv[1:] if argv is None else argv)
    except config.ConfigError as exc:
        sys.stderr.write(f"compute-ctl-operator: {exc}\n")
        sys.exit(2)
    logformat.setup(level=cfg.log_level, fmt=cfg.log_format, compute_id=cfg.compute_id)
    # The --watch-interval timer runs every second; kopf would log each tick at INFO.
    logging.getLogger("kopf.objects").addFilter(_quiet_ticks)
    logger.info("managing %s/%s through %s", cfg.namespace, cfg.name, cfg.compute_url)
    asyncio.run(run(cfg))


if __name__ == "__main__":
    main()
