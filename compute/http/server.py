"""Run the external and internal HTTP servers for one node: ``serving(node)``.

The external server listens on ``params.external_http_host:external_http_port`` and
requires JWTs (``auth``); the internal one listens on ``127.0.0.1:internal_http_port``
only, without auth, and also serves ``/grants``, ``/extensions`` and ``/failpoints``.
Both stop when the context exits (open requests get a short grace period). Each server
caps its connections and bounds idle and header time (``connections``); both share one
``bodies.BodyGate``, and the loggers a peer can make noisy are throttled
(``loghygiene``). This module only starts and stops sockets; what is served is ``app``'s
business.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from compute_ctl.compute import errors, loghygiene
from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute.http import app as app_mod
from compute_ctl.compute.http import bodies, connections, interface

__all__ = ["INTERNAL_HOST", "serving"]

logger = logging.getLogger(__name__)

INTERNAL_HOST = "127.0.0.1"
SHUTDOWN_GRACE_SECONDS = 2.0


@contextlib.asynccontextmanager
async def serving(
    node: interface.Node,
    *,
    metrics: metrics_mod.Metrics | None = None,
) -> AsyncIterator[None]:
    """Serve the node's API until the context exits.

    Pass the node's ``Metrics`` so what the node and the activity monitor record is
    what ``/metrics`` shows; without one, a fresh ``Metrics`` over ``node.state`` is used.
    """
    params = node.params
    if metrics is None:
        metrics = metrics_mod.Metrics(build_tag=params.build_tag, state=node.state)
    loghygiene.throttle()
    gate = bodies.BodyGate()
    runners: list[web.AppRunner] = []
    try:
        for external, host, port in (
            (True, params.external_http_host, params.external_http_port),
            (False, INTERNAL_HOST, params.internal_http_port),
        ):
            which = "external" if external else "internal"
            app = app_mod.build_app(node, metrics=metrics, external=external, gate=gate)
            runner = web.AppRunner(
                app,
                access_log=None,
                shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
                **connections.runner_options(),
            )
            await runner.setup()
            runners.append(runner)
            site = connections.LimitedSite(runner, host, port, name=which)
            try:
                await site.start()
            except OSError as e:
                raise errors.ConfigError(
                    f"cannot listen on {host}:{port} (--{which}-http-port): {e.strerror or e}"
                ) from e
            logger.info("%s HTTP API listening on %s:%s", which, host, port)
        yield
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
