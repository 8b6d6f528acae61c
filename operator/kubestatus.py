"""Writing a resource's status: one merge ``PATCH`` of its status subresource.

kopf writes what a handler put in its ``patch`` only after the handler returns, and
after its own metadata patch (the diffbase annotation, ``diffbase``): two API requests
in a row before a change shows in ``status.observedGeneration``. The handlers write the
status themselves instead, through this writer, as soon as the reconcile has rendered
it; kopf's annotation patch follows. A write the API server does not take returns
``False``, and the handler hands the same patch to kopf (its ``patch.status``), which
writes it as before.

The request is ``PATCH .../NAME/status`` with ``application/merge-patch+json``, the verb
and subresource the operator's Role already grants (kopf used the same). It goes through
``kubeapi`` (kopf's own login).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

from compute_ctl.operator import kubeapi, resource

__all__ = ["StatusWriter"]

logger = logging.getLogger(__name__)

_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class StatusWriter:
    """Writes the status of our resources in one namespace through ``api``."""

    def __init__(self, *, namespace: str, api: kubeapi.ApiSession) -> None:
        self.namespace = namespace
        self._api = api

    async def write(self, name: str, patch: Mapping[str, Any]) -> bool:
        """Merge ``patch`` into ``.status``; whether the API server took it."""
        path = (
            f"/apis/{resource.GROUP}/{resource.VERSION}"
            f"/namespaces/{urllib.parse.quote(self.namespace, safe='')}"
            f"/{resource.PLURAL}/{urllib.parse.quote(name, safe='')}/status"
        )
        try:
            code, _ = await self._api.request(
                "PATCH", path, body={"status": dict(patch)}, headers=_MERGE_PATCH
            )
        except kubeapi.Unreachable as exc:
            logger.info("status of %s not written: %s; kopf will write it", name, exc)
            return False
        if code != 200:
            logger.info("status of %s not written: HTTP %s; kopf will write it", name, code)
            return False
        return True
