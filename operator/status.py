"""The resource's ``.status``: its model, and how it is rendered from what compute_ctl reports.

``ResourceStatus`` is the one definition of the status: the CRD's status schema is
generated from it (``crd.py``) and the reconciler writes ``render(...)`` of it, so the
two cannot drift. The inputs are an ``Observation`` (a parsed ``GET /status``) and the
reconciler's ``Facts`` (which spec the resource wants, what went wrong); the output is a
complete status, and ``patch_for`` turns it into the minimal merge patch against the
stored one (no write when nothing changed, ``lastTransitionTime`` kept when a condition
keeps its status).

Conditions (Kubernetes ``metav1.Condition`` shape):
- ``Ready``: postgres serves: the compute started once and is running or reconfiguring.
- ``Reconciled``: the compute runs exactly the resource's spec (desired = applied = ours);
  the reason says why not (``Invalid``, ``Rejected``, ``Conflict``, ``Applying``...).
- ``RestartRequired``: settings changed that only a restart applies (``pending_restart``).
- ``Degraded``: the compute reports ``failed``, or its configuration failed, or it runs
  on its last applied spec while retrying the desired one (``pending_error``:
  ``Reconciled=False`` and ``Degraded=True``, reason ``ApplyRetrying``).

Pure: no I/O, no kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
import pydantic.alias_generators

from compute_ctl.compute import api_models

__all__ = [
    "CamelModel",
    "Condition",
    "ConditionType",
    "Facts",
    "Observation",
    "Problem",
    "Reason",
    "ResourceStatus",
    "patch_for",
    "render",
    "rfc3339",
]

UNKNOWN = "unknown"
"""``status.status`` while the compute cannot be reached."""

S = api_models.ComputeStatus
TERMINATING = frozenset({S.TERMINATION_PENDING_FAST, S.TERMINATION_PENDING_IMMEDIATE, S.TERMINATED})


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RECONCILED = "Reconciled"
    RESTART_REQUIRED = "RestartRequired"
    DEGRADED = "Degraded"


class Reason(enum.StrEnum):
    """Condition reasons; stable values (they reach dashboards and alerts)."""

    RUNNING = "Running"
    NOT_STARTED = "NotStarted"
    RECONCILED = "Reconciled"
    APPLYING = "Applying"
    INVALID_SPEC = "Invalid"
    REJECTED = "Rejected"
    CONFLICT = "Conflict"
    BUSY = "Busy"
    UNREACHABLE = "Unreachable"
    CONFIGURE_FAILED = "ConfigureFailed"
    COMPUTE_FAILED = "ComputeFailed"
    TERMINATING = "Terminating"
    PENDING_RESTART = "PendingRestart"
    NO_PENDING_RESTART = "NoPendingRestart"
    HEALTHY = "Healthy"
    APPLY_RETRYING = "ApplyRetrying"
    SECRET_MISSING = "SecretMissing"  # noqa: S105 (a reason, not a secret)
    SECRET_UNREADABLE = "SecretUnreadable"  # noqa: S105


class CamelModel(pydantic.BaseModel):
    """camelCase on the wire (Kubernetes' convention), snake_case in Python."""

    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class Condition(CamelModel):
    """One condition, in the shape of Kubernetes' ``metav1.Condition``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ResourceStatus(CamelModel):
    """The ``ComputeSpec`` resource's status (camelCase on the wire)."""

    status: str | None = pydantic.Field(
        default=None, description="compute_ctl's status (Neon's snake_case), or 'unknown'."
    )
    observed_generation: int | None = pydantic.Field(
        default=None, description="The metadata.generation this status reflects."
    )
    spec_hash: str | None = pydantic.Field(
        default=None, description="Hash of spec.computeSpec (compute_ctl's spec hash)."
    )
    compute_spec_hash: str | None = pydantic.Field(
        default=None, description="The compute's desired spec hash, as last observed."
    )
    applied_spec_hash: str | None = pydantic.Field(
        default=None, description="The spec hash the compute last applied."
    )
    conflict_spec_hash: str | None = pydantic.Field(
        default=None,
        description="A spec set on the compute outside this resource; replaced next reconcile.",
    )
    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    last_active: str | None = None
    start_time: str | None = None
    mode: str | None = None
    pending_restart: list[str] | None = None
    timings: dict[str, int] | None = pydantic.Field(
        default=None, description="Startup timings from compute_ctl's /metrics.json."
    )
    last_error: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ResourceStatus:
        """The stored status; anything unreadable counts as absent (a fresh start)."""
        try:
            return cls.model_validate(dict(raw))
        except pydantic.ValidationError:
            return cls()

    def condition(self, kind: ConditionType) -> Condition | None:
        for cond in self.conditions:
            if cond.type == kind.value:
                return cond
        return None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


Observation = api_models.ComputeStatusResponse
"""compute_ctl's ``GET /status``, parsed with the wire contract's own model."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a reconcile fell short; ``message`` never carries a secret."""

    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Facts:
    """What one reconcile learned, besides the observation."""

    generation: int | None
    want: str | None  # hash of the resource's spec; None when it does not validate
    observation: Observation | None  # None when the compute could not be reached
    timings: Mapping[str, int] | None = None
    problem: Problem | None = None
    conflict_hash: str | None = None


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(*, old: ResourceStatus, facts: Facts, now: datetime.datetime) -> ResourceStatus:
    """The complete new status."""
    obs = facts.observation
    drafts = [_ready(obs), _reconciled(facts), _restart(obs), _degraded(facts)]
    conditions = [
        _stamp(kind, draft, old=old.condition(kind), generation=facts.generation, now=now)
        for kind, draft in zip(ConditionType, drafts, strict=True)
    ]
    error = (
        facts.problem.message
        if facts.problem
        else (obs.error or obs.pending_error if obs else None)
    )
    return ResourceStatus(
        status=obs.status.value if obs else UNKNOWN,
        observed_generation=facts.generation,
        spec_hash=facts.want,
        compute_spec_hash=obs.desired_spec_hash if obs else old.compute_spec_hash,
        applied_spec_hash=obs.applied_spec_hash if obs else old.applied_spec_hash,
        conflict_spec_hash=facts.conflict_hash,
        conditions=conditions,
        last_active=obs.last_active if obs else old.last_active,
        start_time=obs.start_time if obs else old.start_time,
        mode=obs.mode if obs else old.mode,
        pending_restart=list(obs.pending_restart) if obs else old.pending_restart,
        timings=dict(facts.timings) if facts.timings else old.timings,
        last_error=error,
    )


def patch_for(stored: Mapping[str, Any], new: ResourceStatus) -> dict[str, Any]:
    """A merge patch taking the stored status to ``new``; empty when they agree.

    Only our own fields are touched: anything else under ``.status`` is left alone.
    """
    patch: dict[str, Any] = {}
    for key, value in new.wire().items():
        if stored.get(key) != value and not (value is None and key not in stored):
            patch[key] = value
    return patch


# --- conditions ----------------------------------------------------------------

_Draft = tuple[Literal["True", "False", "Unknown"], Reason, str]


def _ready(obs: Observation | None) -> _Draft:
    if obs is None:
        return ("Unknown", Reason.UNREACHABLE, "compute_ctl cannot be reached")
    if obs.serving:
        return ("True", Reason.RUNNING, f"postgres is serving (compute status {obs.status})")
    if obs.status in TERMINATING:
        return ("False", Reason.TERMINATING, f"compute status {obs.status}")
    if obs.status is S.FAILED:
        return ("False", Reason.COMPUTE_FAILED, obs.error or "compute failed")
    return ("False", Reason.NOT_STARTED, f"compute status {obs.status}")


def _reconciled(facts: Facts) -> _Draft:
    obs = facts.observation
    if facts.problem is not None:
        status: Literal["False", "Unknown"] = (
            "Unknown" if facts.problem.reason is Reason.UNREACHABLE else "False"
        )
        return (status, facts.problem.reason, facts.problem.message)
    if obs is None:
        return ("Unknown", Reason.UNREACHABLE, "compute_ctl cannot be reached")
    if obs.status is S.FAILED:
        return ("False", Reason.COMPUTE_FAILED, obs.error or "compute failed")
    settled = obs.desired_spec_hash == facts.want == obs.applied_spec_hash
    if settled and obs.status is S.RUNNING:
        return ("True", Reason.RECONCILED, f"the compute runs spec {facts.want}")
    if obs.pending_error is not None:
        return ("False", Reason.APPLY_RETRYING, obs.pending_error)
    return ("False", Reason.APPLYING, f"compute status {obs.status}; applying spec {facts.want}")


def _restart(obs: Observation | None) -> _Draft:
    if obs is None:
        return ("Unknown", Reason.UNREACHABLE, "compute_ctl cannot be reached")
    if obs.pending_restart:
        names = ", ".join(obs.pending_restart)
        return ("True", Reason.PENDING_RESTART, f"a restart is needed to apply: {names}")
    return ("False", Reason.NO_PENDING_RESTART, "")


def _degraded(facts: Facts) -> _Draft:
    obs = facts.observation
    if obs is not None and obs.status is S.FAILED:
        return ("True", Reason.COMPUTE_FAILED, obs.error or "compute failed")
    if facts.problem is not None and facts.problem.reason is Reason.CONFIGURE_FAILED:
        return ("True", Reason.CONFIGURE_FAILED, facts.problem.message)
    if obs is not None and obs.pending_error is not None:
        return ("True", Reason.APPLY_RETRYING, obs.pending_error)
    if obs is None:
        return ("Unknown", Reason.UNREACHABLE, "compute_ctl cannot be reached")
    return ("False", Reason.HEALTHY, "")


def _stamp(
    kind: ConditionType,
    draft: _Draft,
    *,
    old: Condition | None,
    generation: int | None,
    now: datetime.datetime,
) -> Condition:
    status, reason, message = draft
    kept = old is not None and old.status == status
    return Condition(
        type=kind.value,
        status=status,
        reason=reason.value,
        message=message,
        last_transition_time=old.last_transition_time if old and kept else rfc3339(now),
        observed_generation=generation,
    )
