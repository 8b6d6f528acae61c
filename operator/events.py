"""Which Kubernetes Events a status change deserves.

Events mark transitions, not states: ``transitions(old, new)`` compares two rendered
statuses and names what changed (Ready gained or lost, Degraded raised or cleared, a
restart newly required, the spec newly refused or in conflict), so a periodic reconcile
that finds nothing new posts nothing. The reconciler adds events for its own actions
(a spec pushed, a conflict overwritten, the compute terminated).

Pure: no I/O, no kopf.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from compute_ctl.operator import status

__all__ = ["Event", "transitions"]

# Reconciled reasons that mean the resource's spec was refused or overridden: worth a Warning.
_TROUBLE = frozenset(
    {
        status.Reason.INVALID_SPEC,
        status.Reason.REJECTED,
        status.Reason.CONFLICT,
        status.Reason.CONFIGURE_FAILED,
        status.Reason.BUSY,
        status.Reason.UNREACHABLE,
        status.Reason.SECRET_MISSING,
        status.Reason.SECRET_UNREADABLE,
    }
)


@dataclasses.dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(old: status.ResourceStatus, new: status.ResourceStatus) -> list[Event]:
    events: list[Event] = []
    kinds = status.ConditionType

    before, after = old.condition(kinds.READY), new.condition(kinds.READY)
    if after and after.status == "True" and (before is None or before.status != "True"):
        events.append(Event("Normal", "Ready", after.message))
    if after and before and before.status == "True" and after.status != "True":
        events.append(Event("Warning", "NotReady", f"{after.reason}: {after.message}"))

    before, after = old.condition(kinds.DEGRADED), new.condition(kinds.DEGRADED)
    if after and after.status == "True" and (before is None or before.status != "True"):
        events.append(Event("Warning", "Degraded", f"{after.reason}: {after.message}"))
    if after and before and before.status == "True" and after.status == "False":
        events.append(Event("Normal", "Recovered", "the compute is healthy again"))

    before, after = old.condition(kinds.RESTART_REQUIRED), new.condition(kinds.RESTART_REQUIRED)
    if after and after.status == "True" and (before is None or before.message != after.message):
        events.append(Event("Warning", "RestartRequired", after.message))

    before, after = old.condition(kinds.RECONCILED), new.condition(kinds.RECONCILED)
    if after and after.reason in _TROUBLE:
        news = before is None or (before.reason, before.message) != (after.reason, after.message)
        if news:
            events.append(Event("Warning", after.reason, after.message))
    return events
