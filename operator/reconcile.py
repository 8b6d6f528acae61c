"""One reconcile: compare the resource's spec with what compute_ctl reports, act, report.

``Reconciler.reconcile(body, ...)`` is level-triggered and idempotent: every kopf cause
(create, update, resume, the periodic timer) calls it, and it always ends with a complete
status and the events the change deserves (``Outcome``). What it does in between is
``decide``'s pure verdict:

- the compute already wants the resource's spec (by hash): nothing to push;
- the compute is ``failed`` or terminating: nothing can be pushed (status shows why);
- the compute wants a spec this operator never pushed (a direct ``/configure``): a
  *conflict*. On a change of the resource (create/update) the resource wins at once. On a
  periodic reconcile the conflict is first reported (``Reconciled=False``, reason
  ``Conflict``, ``status.conflictSpecHash``, a Warning event), and the next reconcile
  pushes the resource's spec: the resource is the one source of truth, and an override
  is visible before it is undone;
- the compute refused this exact spec before (HTTP 400), as this process saw: not pushed
  again until it changes. A refusal is never read back from the stored status: anyone
  allowed to patch the status subresource could otherwise freeze reconciling with a forged
  ``Rejected``. After a restart the spec is pushed once more, and a real refusal recurs;
- otherwise: push (``POST /configure``, retried while compute_ctl is busy).

A change of the resource skips the read when this process knows what the running
compute wants (its last observation): the spec is pushed at once with ``If-Match`` on
that hash, and a 412 (the compute changed meanwhile) falls back to the read and
``decide``. ``/configure`` answers with the status, which is the observation after a
push: a change costs one request to compute_ctl.

An invalid spec never reaches the compute: the resource's spec goes through the same
admission as ``/configure`` (``compute.admission``, with what the operator knows of the
compute: ``admission.Rules``), and ``InvalidSpec`` ends the reconcile before any call but
``GET /status`` (``Reconciled=False``, reason ``Invalid``, a Warning event).

Failures are returned as ``Outcome.error`` (``RetryLater`` or ``GiveUp``) *with* the
status to write; ``handlers.py`` maps them to kopf's errors. The caller's ``publish``
(the status write) runs under the resource's lock, so statuses are written in the order
they were rendered.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from compute_ctl.compute import admission, api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.operator import client as client_mod
from compute_ctl.operator import events, resource, secretrefs, status

__all__ = [
    "Action",
    "Decision",
    "GiveUp",
    "Outcome",
    "Publish",
    "ReconcileError",
    "Reconciler",
    "RetryLater",
    "SecretSource",
    "Trigger",
    "decide",
]

logger = logging.getLogger(__name__)

S = api_models.ComputeStatus
_BUSY = frozenset({S.CONFIGURATION_PENDING, S.INIT, S.CONFIGURATION})
_TERMINATING = status.TERMINATING
_CONFIGURABLE = frozenset({S.EMPTY, S.RUNNING})
R = status.Reason


class Trigger(enum.Enum):
    CHANGE = "change"  # create or update: the resource's spec is new
    RESYNC = "resync"  # resume or timer: nothing new on our side


class Action(enum.Enum):
    NONE = "none"
    PUSH = "push"
    HOLD = "hold"  # a conflict, reported this time and resolved the next


class ReconcileError(Exception):
    def __init__(self, problem: status.Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class RetryLater(ReconcileError):
    """Transient: compute_ctl unreachable or busy beyond the deadline."""

    def __init__(self, problem: status.Problem, *, delay: float) -> None:
        super().__init__(problem)
        self.delay = delay


class GiveUp(ReconcileError):
    """Retrying the same spec cannot help: invalid, refused, or the compute failed."""


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    problem: status.Problem | None = None
    conflict_hash: str | None = None  # a foreign spec reported now (HOLD)
    overwrite: str | None = None  # a foreign spec being replaced (PUSH)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: status.ResourceStatus
    events: list[events.Event]
    error: ReconcileError | None = None


Publish = Callable[[Outcome], Awaitable[None]]


def decide(
    *,
    obs: status.Observation,
    want: str,
    old: status.ResourceStatus,
    pushed: frozenset[str],
    trigger: Trigger,
    refused: Mapping[str, str] | None = None,
) -> Decision:
    """What to do, from what the compute reports and what the resource wants (pure).

    A compute spec is ours if this process pushed it (``pushed``) or the stored status
    recorded it (``computeSpecHash``, which survives an operator restart), unless it is the
    conflict reported last time. Any other non-empty spec came from elsewhere.
    ``refused``: spec hash -> compute_ctl's message, for the refusals this process saw.
    """
    if obs.status in _TERMINATING:
        return Decision(Action.NONE, status.Problem(R.TERMINATING, "the compute is terminating"))
    if obs.status is S.FAILED or obs.desired_spec_hash == want:
        return Decision(Action.NONE)
    if trigger is Trigger.RESYNC and refused and want in refused:
        return Decision(Action.NONE, status.Problem(R.REJECTED, refused[want]))
    ours = (pushed | {old.compute_spec_hash or ""}) - {old.conflict_spec_hash or ""}
    foreign = obs.desired_spec_hash not in ours and obs.desired_spec_hash != ""
    if not foreign:
        return Decision(Action.PUSH)
    if trigger is Trigger.CHANGE or old.conflict_spec_hash == obs.desired_spec_hash:
        return Decision(Action.PUSH, overwrite=obs.desired_spec_hash)
    message = (
        f"compute_ctl runs spec {obs.desired_spec_hash}, set outside this resource (a direct "
        f"/configure); the resource's spec {want} replaces it at the next reconcile"
    )
    return Decision(
        Action.HOLD, status.Problem(R.CONFLICT, message), conflict_hash=obs.desired_spec_hash
    )


class SecretSource(Protocol):
    """Reads one Secret of the resource's namespace (``kubesecrets.SecretReader``);
    raises ``secretrefs.SecretUnavailable``."""

    async def read(self, name: str) -> secretrefs.Secret: ...


@dataclasses.dataclass
class _Memory:
    """Per-resource state kept across reconciles in this process."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    generation: int | None = None
    pushed: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=32)
    )
    # Spec hash -> compute_ctl's message, for specs it refused (HTTP 400) in this process.
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    # The last status rendered here. This process is the status's only writer, so it is
    # fresher than the body of an event that raced our own status patch (kopf hands the
    # timer and the change handlers the bodies they last saw).
    last_status: status.ResourceStatus | None = None
    reconciled_at: float = 0.0  # time.monotonic() of the last full reconcile
    # The referenced Secrets' resourceVersions at the last reconcile (None: unreadable),
    # and when ``due`` last read them again.
    secret_versions: dict[str, str | None] = dataclasses.field(default_factory=dict)
    secrets_checked: float = 0.0


class Reconciler:
    """Reconciles resources against one compute_ctl (reached through ``client``)."""

    def __init__(
        self,
        client: client_mod.ComputeClient,
        *,
        busy_timeout: float = 120.0,
        retry_delay: float = 5.0,
        clock: Callable[[], datetime.datetime] | None = None,
        rules: admission.Rules | None = None,
        secrets: SecretSource | None = None,
        secret_interval: float = 10.0,
    ) -> None:
        self.client = client
        self.secrets = secrets
        self.secret_interval = secret_interval
        self.rules = rules or admission.Rules()
        self.busy_timeout = busy_timeout
        self.retry_delay = retry_delay
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._memory: dict[str, _Memory] = collections.defaultdict(_Memory)

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        uid: str,
        trigger: Trigger,
        publish: Publish | None = None,
    ) -> Outcome | None:
        """Reconcile one resource; ``None`` when ``body`` is older than one already handled.

        ``publish`` is awaited with the outcome before the resource's lock is released, so
        outcomes are published (their status written) in the order they were rendered: a
        periodic reconcile cannot overwrite a newer change's status with its older one.
        """
        view = resource.ResourceView.from_body(body)
        memory = self._memory[uid]
        async with memory.lock:
            if _stale(view.generation, memory.generation):
                logger.debug("skipping a stale body of %s (gen %s)", view.name, view.generation)
                return None
            seen = memory.generation is not None and view.generation == memory.generation
            if trigger is Trigger.CHANGE and seen:
                # A repeated create/update of a generation already reconciled here (a
                # replayed watch event): nothing changed on the resource's side.
                trigger = Trigger.RESYNC
            memory.generation = view.generation
            outcome = await self._reconcile(view, memory=memory, trigger=trigger)
            if publish is not None:
                await publish(outcome)
            return outcome

    async def due(self, *, uid: str, resync_interval: float) -> bool:
        """Whether the periodic check must reconcile: the resync interval is over, or the
        compute changed since the last reconcile (one ``GET /status``).

        A compute_ctl that restarted comes back ``empty`` with a new start time; it gets
        its spec at the next check (``--watch-interval``, 1 s), not the next resync.
        """
        memory = self._memory.get(uid)
        last = memory.last_status if memory is not None else None
        if memory is None or last is None:
            return True
        if time.monotonic() - memory.reconciled_at >= resync_interval:
            return True
        if await self._secrets_changed(memory):
            return True
        try:
            obs = await self.client.status()
        except client_mod.ComputeApiError:
            return last.status != status.UNKNOWN
        seen = (obs.status.value, obs.start_time, obs.desired_spec_hash, obs.applied_spec_hash)
        return seen != (
            last.status,
            last.start_time,
            last.compute_spec_hash,
            last.applied_spec_hash,
        )

    async def _reconcile(
        self, view: resource.ResourceView, *, memory: _Memory, trigger: Trigger
    ) -> Outcome:
        old = memory.last_status or status.ResourceStatus.parse(view.status)
        actions: list[events.Event] = []
        error: ReconcileError | None = None
        want: str | None = None
        obs: status.Observation | None = None
        decision = Decision(Action.NONE)
        try:
            secrets = await self._read_secrets(view, memory=memory)
            try:
                admitted = view.compute_spec(self.rules, secrets)
            except secretrefs.SecretKeyMissing as exc:
                raise GiveUp(status.Problem(R.SECRET_MISSING, str(exc))) from None
            desired, want = admitted.spec, admitted.hash
            expected = _expected_hash(memory.last_status, want=want, trigger=trigger)
            if expected is not None:
                # The compute wants the spec this process last saw it want: push at once,
                # If-Match that spec; any change since (a direct /configure, a restart, a
                # failure) answers 412, and the full path below reads and decides.
                memory.pushed.append(want)
                obs = await self._configure_once(desired, if_match=expected)
                if obs is not None:
                    decision = Decision(Action.PUSH)
                    actions.append(_configured(want, view.generation, None))
            if obs is None:
                obs = await self.client.status()
                pushed = frozenset(memory.pushed)
                decision = decide(
                    obs=obs,
                    want=want,
                    old=old,
                    pushed=pushed,
                    trigger=trigger,
                    refused=memory.refused,
                )
                if decision.action is Action.PUSH:
                    memory.pushed.append(want)
                    obs = await self._push(desired, want=want, obs=obs)
                    actions.append(_configured(want, view.generation, decision.overwrite))
            if decision.problem is not None and decision.problem.reason is R.REJECTED:
                error = GiveUp(decision.problem)
        except resource.InvalidSpec as exc:
            error = GiveUp(status.Problem(R.INVALID_SPEC, str(exc)))
            obs = await self._observe_quietly()
        except ReconcileError as exc:
            error = exc
            if want is not None and exc.problem.reason is R.REJECTED:
                memory.refused = {want: exc.problem.message}  # the latest refusal only
            obs = await self._observe_quietly()
        except client_mod.ComputeUnreachable as exc:
            logger.info("compute_ctl unreachable: %s", exc)
            error = RetryLater(_unreachable(self.client.base_url), delay=self.retry_delay)
        except client_mod.ComputeApiError as exc:  # compute_ctl answered, but not as expected
            logger.warning("compute_ctl API error: %s", exc)
            error = RetryLater(status.Problem(R.UNREACHABLE, str(exc)), delay=self.retry_delay)
        timings = await self._timings_quietly() if _timings_wanted(old, obs) else None
        facts = status.Facts(
            generation=view.generation,
            want=want,
            observation=obs,
            timings=timings,
            problem=error.problem if error else decision.problem,
            conflict_hash=decision.conflict_hash,
        )
        new = status.render(old=old, facts=facts, now=self._clock())
        memory.last_status = new
        memory.reconciled_at = time.monotonic()
        return Outcome(new, [*actions, *events.transitions(old, new)], error)

    async def _read_secrets(
        self, view: resource.ResourceView, *, memory: _Memory
    ) -> dict[str, secretrefs.Secret]:
        """Every Secret ``spec.credentials`` names, read now (one GET each), by name.

        Their resourceVersions are remembered, readable or not, so ``due`` notices a
        rotated Secret, or a missing one that appears. A Secret that cannot be read ends
        the reconcile before any push: ``SecretMissing`` (not found) or
        ``SecretUnreadable`` (forbidden, or the API server unreachable: retried).
        """
        names = view.credentials().secret_names()
        found: dict[str, secretrefs.Secret] = {}
        failures: list[secretrefs.SecretUnavailable] = []
        versions: dict[str, str | None] = {}
        for name in names:
            try:
                if self.secrets is None:
                    raise secretrefs.SecretUnavailable(f"Secret {name!r}: no Secret reader")
                secret = await self.secrets.read(name)
            except secretrefs.SecretUnavailable as exc:
                failures.append(exc)
                versions[name] = None
                continue
            found[name] = secret
            versions[name] = secret.resource_version
        memory.secret_versions = versions
        memory.secrets_checked = time.monotonic()
        if not failures:
            return found
        first = failures[0]
        if first.not_found:
            raise GiveUp(status.Problem(R.SECRET_MISSING, str(first)))
        problem = status.Problem(R.SECRET_UNREADABLE, str(first))
        if first.forbidden:
            raise GiveUp(problem)
        raise RetryLater(problem, delay=self.retry_delay)

    async def _secrets_changed(self, memory: _Memory) -> bool:
        """Whether a referenced Secret's resourceVersion changed (read at most once per
        ``secret_interval``). A Secret that cannot be read for a transient reason (the
        API server unreachable) counts as unchanged."""
        if not memory.secret_versions or self.secrets is None:
            return False
        now = time.monotonic()
        if now - memory.secrets_checked < self.secret_interval:
            return False
        memory.secrets_checked = now
        for name, seen in memory.secret_versions.items():
            try:
                current: str | None = (await self.secrets.read(name)).resource_version
            except secretrefs.SecretUnavailable as exc:
                if not (exc.not_found or exc.forbidden):
                    continue
                current = None
            if current != seen:
                logger.info("Secret %r changed: reconciling", name)
                return True
        return False

    async def _push(
        self, desired: spec_mod.ComputeSpec, *, want: str, obs: status.Observation
    ) -> status.Observation:
        """``POST /configure`` until compute_ctl takes it; returns the observation after."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.05
        while True:
            if obs.status in _CONFIGURABLE:
                answer = await self._configure_once(desired, if_match=obs.desired_spec_hash or None)
                if answer is not None:
                    return answer
                obs = await self.client.status()
                if obs.desired_spec_hash == want:
                    return obs
                continue
            if obs.status not in _BUSY:
                message = f"compute_ctl cannot take a spec in status {obs.status}"
                raise GiveUp(status.Problem(R.COMPUTE_FAILED, message))
            if time.monotonic() >= deadline:
                message = f"compute_ctl stayed busy ({obs.status}) for {self.busy_timeout:g}s"
                raise RetryLater(status.Problem(R.BUSY, message), delay=self.retry_delay)
            # compute_ctl has no push channel for status changes: poll with a growing pause.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            obs = await self.client.status()

    async def _configure_once(
        self, desired: spec_mod.ComputeSpec, *, if_match: str | None
    ) -> status.Observation | None:
        """One ``POST /configure``: the status it answers with, ``None`` for a 412."""
        try:
            return await self.client.configure(desired, if_match=if_match)
        except client_mod.ComputePrecondition as exc:
            logger.debug("configure not accepted now: %s", exc)
            return None
        except client_mod.ComputeRejected as exc:
            raise GiveUp(status.Problem(R.REJECTED, str(exc))) from exc
        except client_mod.ComputeFailed as exc:
            raise GiveUp(status.Problem(R.CONFIGURE_FAILED, str(exc))) from exc
        except client_mod.ComputeProtocolError as exc:
            problem = status.Problem(R.CONFIGURE_FAILED, str(exc))
            raise RetryLater(problem, delay=self.retry_delay) from exc

    async def _observe_quietly(self) -> status.Observation | None:
        try:
            return await self.client.status()
        except client_mod.ComputeApiError as exc:
            logger.info("compute_ctl status unavailable: %s", exc)
            return None

    async def _timings_quietly(self) -> dict[str, int] | None:
        try:
            return await self.client.timings()
        except client_mod.ComputeApiError as exc:
            logger.debug("compute_ctl timings unavailable: %s", exc)
            return None

    async def terminate(self, *, uid: str) -> client_mod.Terminated:
        """``POST /terminate?mode=fast``; blocks until compute_ctl stopped postgres."""
        async with self._memory[uid].lock:
            result = await self.client.terminate("fast")
        self._memory.pop(uid, None)
        return result


def _expected_hash(
    last: status.ResourceStatus | None, *, want: str, trigger: Trigger
) -> str | None:
    """The compute's spec hash a change may be pushed over without reading ``/status``
    first: what this process itself last saw a running compute want, if that was neither
    a reported conflict nor already ``want``. ``None``: read and ``decide``."""
    if trigger is not Trigger.CHANGE or last is None or last.status != S.RUNNING.value:
        return None
    current = last.compute_spec_hash
    if not current or current == want or last.conflict_spec_hash:
        return None
    return current


def _timings_wanted(old: status.ResourceStatus, obs: status.Observation | None) -> bool:
    """Startup timings are final once the compute runs: fetch them once per compute start."""
    if obs is None or not obs.serving:
        return False
    return not old.timings or old.start_time != obs.start_time


def _stale(generation: int | None, seen: int | None) -> bool:
    return generation is not None and seen is not None and generation < seen


def _unreachable(url: str) -> status.Problem:
    return status.Problem(R.UNREACHABLE, f"compute_ctl cannot be reached at {url}")


def _configured(want: str, generation: int | None, overwrite: str | None) -> events.Event:
    where = f" (generation {generation})" if generation is not None else ""
    if overwrite:
        message = f"replaced spec {overwrite}, set outside this resource, with spec {want}{where}"
        return events.Event("Warning", "ConflictResolved", message)
    return events.Event("Normal", "Configured", f"compute_ctl applied spec {want}{where}")
