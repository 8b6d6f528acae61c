"""Kubernetes client libraries the operator process never calls, kept out of it.

kopf imports ``kubernetes`` (and ``kubernetes_asyncio``, ``pykube``) whenever they are
installed, only to recognise their model objects in ``kopf.adopt()`` and to offer a
``login_via_client``; this operator uses neither (it logs in with kopf's own kubeconfig
and service-account logins, and passes plain dicts). The ``kubernetes`` package is in
the image for the tests' API-server tier, and importing it costs the sidecar about
1.3 s of start-up and 11 MB of resident memory. ``skip()`` marks the three as absent in
this process (``import kubernetes`` then raises ``ImportError``, which kopf expects when
they are not installed); call it before kopf is first imported.
"""

from __future__ import annotations

import sys

__all__ = ["UNUSED", "skip"]

UNUSED = ("kubernetes", "kubernetes_asyncio", "pykube")


def skip() -> None:
    if "kopf" in sys.modules:
        return  # too late: kopf has looked already
    for name in UNUSED:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
