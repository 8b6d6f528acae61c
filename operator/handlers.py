"""kopf's side: settings, and the handlers that hand each cause to the reconciler.

The handlers are thin. Every cause that can change the desired or the actual state
(create, update, resume, and a periodic timer) runs the same ``Reconciler.reconcile``.
The timer ticks every ``--watch-interval`` (1 s) but only reads ``GET /status`` (and,
every ``--secret-interval``, the Secrets the resource references) unless the compute or a
Secret changed or ``--resync-interval`` is over, so a restarted compute_ctl gets its
spec back within about a second, and a rotated password is applied;
the handler writes the status it returns (a minimal merge patch through the status
subresource, ``kubestatus``), posts its events, and translates its error, here and only
here:
``RetryLater`` becomes ``kopf.TemporaryError`` (retried after a delay) and ``GiveUp``
becomes ``kopf.PermanentError`` (not retried until the resource changes; the timer keeps
reporting).

**The one finalizer** (``compute.pgctl.dev/terminate``): deletion must terminate the
compute and record the LSN before the resource disappears, so the delete handler is not
optional and kopf holds a finalizer while the operator manages the resource (the timer
would require one too). If the operator is gone for good, remove it by hand:
``kubectl patch cspec NAME --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'``.
A compute still starting or reconfiguring answers 412: the handler retries (every
``--retry-delay``) until it can terminate it. After ``--delete-retries`` failed attempts
to reach compute_ctl, deletion proceeds anyway with a Warning event (a compute that cannot
be reached cannot be terminated either).

**Scope and RBAC**: the operator watches one resource, by a server-side field selector
(``metadata.name=NAME``) and a client-side ``when`` filter (for API servers that ignore
selectors), in one namespace, standalone (no peering), with cluster scanning disabled, so
a namespaced Role (list/watch/patch on its computespec and patch on its status, create
on events, and get on the Secrets ``spec.credentials`` names, by ``resourceNames``:
``kubesecrets``) is all it needs. kopf keeps its progress and a hash of the
last-handled spec (``diffbase``) in annotations under the group's prefix, never in
``.status``.

**The status is written by the handler**, while the reconcile holds the resource's lock
(``Reconciler.reconcile(publish=)``), not left in kopf's ``patch``: kopf would write it
only after its diffbase annotation, one more API round trip after ``/configure``
answered. kopf's annotation patch follows; if it fails, kopf handles the change again,
which is a reconcile that finds the compute already running the spec (nothing pushed).
A status write the API server refuses goes into kopf's ``patch`` (kopf writes it as
before). The events are posted after the status.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import kopf

from compute_ctl.operator import client as client_mod
from compute_ctl.operator import config as config_mod
from compute_ctl.operator import diffbase, kubestatus, reconcile, resource, status

__all__ = ["build_registry", "build_settings"]

logger = logging.getLogger(__name__)

_RESOURCE = (resource.GROUP, resource.VERSION, resource.PLURAL)
REPORTING_COMPONENT = "compute-ctl-operator"


def build_settings(cfg: config_mod.OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True  # no namespace/CRD watching: no cluster-wide RBAC
    settings.posting.enabled = True
    settings.posting.loggers = False  # our own events only, not kopf's log lines
    # Events come from the operator by name (kubectl describe's "From"), not "kopf"/"dev".
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = cfg.compute_id or cfg.name
    settings.persistence.finalizer = resource.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=resource.GROUP)
    # A hash of the last handled spec, not a copy of it (it holds password verifiers).
    settings.persistence.diffbase_storage = diffbase.HashedDiffBaseStorage(
        prefix=resource.GROUP, key="last-handled-spec"
    )
    # A tuple key: the string 'group/plural' silently matches nothing in kopf 1.45.
    settings.watching.field_selectors[(resource.GROUP, resource.PLURAL)] = (
        f"metadata.name={cfg.name}"
    )
    # Reconnect watches that go quiet (kopf#1276); the timer covers missed events anyway.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # On deletion kopf holds the finalizer until the resync timer has stopped. A timer in
    # the middle of its GET /status (it runs every second) misses kopf's instant-exit
    # check, and kopf then looks again only after cancellation_polling: 60 s by default,
    # a minute of Terminating after the compute was already terminated (seen on real pods).
    settings.background.instant_exit_timeout = 1.0
    settings.background.cancellation_polling = 1.0
    return settings


_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _in_cluster() -> kopf.ConnectionInfo | None:
    """The in-cluster login as client-go does it: the API server from
    KUBERNETES_SERVICE_HOST/PORT (kopf's login_with_service_account names
    kubernetes.default.svc, which a hostNetwork pod without cluster DNS cannot resolve)."""
    token_path, host = _SA_DIR / "token", os.environ.get("KUBERNETES_SERVICE_HOST")
    if host is None or not token_path.exists():
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    namespace = _SA_DIR / "namespace"
    ca = _SA_DIR / "ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://{f'[{host}]' if ':' in host else host}:{port}",
        ca_path=str(ca) if ca.exists() else None,
        token=token_path.read_text().strip(),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
    )


def login(cfg: config_mod.OperatorConfig, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The API server and credentials, for kopf and for reading Secrets (``kubesecrets``)."""
    if cfg.server is None:
        # In a pod, the ServiceAccount token; elsewhere, $KUBECONFIG (kopf's own login).
        # No client library needed (login_via_client needs `kubernetes`: 126 MB in the image).
        info: kopf.ConnectionInfo | None = _in_cluster() or kopf.login_with_kubeconfig(**kwargs)
        return info
    token = cfg.token_file.read_text().strip() if cfg.token_file else None
    return kopf.ConnectionInfo(
        server=cfg.server,
        insecure=cfg.insecure,
        token=token,
        default_namespace=cfg.namespace,
    )


def build_registry(
    cfg: config_mod.OperatorConfig,
    reconciler: reconcile.Reconciler,
    writer: kubestatus.StatusWriter,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    def mine(name: str, namespace: str | None, **_: Any) -> bool:
        return name == cfg.name and namespace == cfg.namespace

    @kopf.on.login(registry=registry)
    def on_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login(cfg, **kwargs)

    @kopf.on.resume(*_RESOURCE, when=mine, id="reconcile", registry=registry)
    @kopf.on.create(*_RESOURCE, when=mine, id="reconcile", registry=registry)
    @kopf.on.update(*_RESOURCE, when=mine, id="reconcile", registry=registry)
    async def on_change(
        body: kopf.Body, patch: kopf.Patch, uid: str, reason: str, **_: Any
    ) -> None:
        trigger = reconcile.Trigger.RESYNC if reason == "resume" else reconcile.Trigger.CHANGE
        publish = functools.partial(_publish, writer=writer, body=body, patch=patch)
        outcome = await reconciler.reconcile(body, uid=uid, trigger=trigger, publish=publish)
        if outcome is None:
            return
        if isinstance(outcome.error, reconcile.RetryLater):
            raise kopf.TemporaryError(str(outcome.error), delay=outcome.error.delay)
        if isinstance(outcome.error, reconcile.GiveUp):
            raise kopf.PermanentError(str(outcome.error))

    check = min(cfg.watch_interval, cfg.resync_interval)

    @kopf.timer(
        *_RESOURCE, interval=check, initial_delay=check, when=mine, id="resync", registry=registry
    )
    async def on_timer(body: kopf.Body, patch: kopf.Patch, uid: str, **_: Any) -> None:
        # Every --watch-interval one GET /status; a full reconcile when the compute changed
        # (a restarted compute_ctl is back `empty`) or --resync-interval is over.
        if not await reconciler.due(uid=uid, resync_interval=cfg.resync_interval):
            return
        publish = functools.partial(_publish, writer=writer, body=body, patch=patch)
        outcome = await reconciler.reconcile(
            body, uid=uid, trigger=reconcile.Trigger.RESYNC, publish=publish
        )
        if outcome is None:
            return
        if isinstance(outcome.error, reconcile.RetryLater):
            raise kopf.TemporaryError(str(outcome.error), delay=outcome.error.delay)
        # GiveUp: the status says so; the next tick looks again.

    @kopf.on.delete(*_RESOURCE, when=mine, id="terminate", retries=None, registry=registry)
    async def on_delete(body: kopf.Body, uid: str, retry: int, **_: Any) -> None:
        try:
            result = await reconciler.terminate(uid=uid)
        except client_mod.ComputePrecondition as exc:
            # 412: still starting or reconfiguring (init, configuration*). It will be
            # terminable: retry until it is, holding the finalizer (postgres runs).
            raise kopf.TemporaryError(str(exc), delay=cfg.retry_delay) from exc
        except client_mod.ComputeUnreachable as exc:
            if retry < cfg.delete_retries:
                raise kopf.TemporaryError(str(exc), delay=cfg.retry_delay) from exc
            kopf.event(
                body,
                type="Warning",
                reason="TerminateFailed",
                message=f"deleting without terminating the compute: {exc}",
            )
            return
        except client_mod.ComputeApiError as exc:
            kopf.event(body, type="Warning", reason="TerminateFailed", message=str(exc))
            return
        kopf.event(body, type="Normal", reason="Terminated", message=_terminated_message(result))

    return registry


async def _publish(
    outcome: reconcile.Outcome,
    *,
    writer: kubestatus.StatusWriter,
    body: kopf.Body,
    patch: kopf.Patch,
) -> None:
    """Write the outcome's status now (before kopf's own patches), then post its events.

    A status the API server did not take goes into kopf's ``patch``: kopf writes it after
    the handler, as it always did. Events follow the status, so their posting does not
    compete with the status write.
    """
    stored = body.get("status") or {}
    diff = status.patch_for(stored, outcome.status)
    if diff and not await writer.write(body.meta.name or "", diff):
        patch.status.update(diff)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _terminated_message(result: client_mod.Terminated) -> str:
    if result.already:
        return "the compute was already terminated"
    if result.lsn:
        return f"the compute terminated (fast shutdown) at LSN {result.lsn}"
    return "the compute terminated (fast shutdown); no LSN (local storage)"
