"""``compute-ctl-operator`` / ``python -m compute_ctl.operator``: run the kopf sidecar.

Parses flags into ``OperatorConfig``, opens the compute_ctl client and runs kopf in this
process's main thread and loop (so SIGTERM stops it gracefully). It shares no loop with
compute_ctl, which is another process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

import kopf

from compute_ctl.compute import admission
from compute_ctl.operator import client, config, credentials, handlers, reconcile

logger = logging.getLogger(__name__)


async def run(cfg: config.OperatorConfig) -> None:
    auth = None
    if cfg.key_file is not None:
        auth = credentials.TokenSource(cfg.key_file, compute_id=cfg.compute_id).header
    async with client.ComputeClient(
        cfg.compute_url, configure_timeout=cfg.configure_timeout, auth=auth
    ) as compute:
        rules = admission.Rules(
            privileged_role=cfg.privileged_role,
            superuser=cfg.compute_superuser,
            maintenance_db=cfg.compute_dbname,
        )
        reconciler = reconcile.Reconciler(
            compute, busy_timeout=cfg.busy_timeout, retry_delay=cfg.retry_delay, rules=rules
        )
        await kopf.operator(
            registry=handlers.build_registry(cfg, reconciler),
            settings=handlers.build_settings(cfg),
            standalone=True,
            clusterwide=False,
            namespaces=[cfg.namespace],
            liveness_endpoint=cfg.liveness,
        )


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cfg = config.parse(sys.argv[1:] if argv is None else argv)
    except config.ConfigError as exc:
        sys.stderr.write(f"compute-ctl-operator: {exc}\n")
        sys.exit(2)
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logger.info("managing %s/%s through %s", cfg.namespace, cfg.name, cfg.compute_url)
    asyncio.run(run(cfg))


if __name__ == "__main__":
    main()
