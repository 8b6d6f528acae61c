"""What stands between a resource change and the compute: one ``POST /configure``.

Against an in-memory compute_ctl that honours ``If-Match`` as the real one does (412 when
the compute wants another spec) and records every call: a change is pushed over the spec
this process last saw without reading ``/status`` first, and the status ``/configure``
answers with is the observation; anything that happened in between (a direct
``/configure``) makes the push fail with 412, and the reconcile then reads, decides and
reports the conflict exactly as before. The status of each reconcile is published (written)
while the resource's lock is held, so statuses are written in the order they were rendered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.operator import client as client_mod
from compute_ctl.operator import reconcile

S = api_models.ComputeStatus
CHANGE = reconcile.Trigger.CHANGE


class FakeCompute:
    base_url = "http://compute"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.desired = ""

    def _status(self) -> api_models.ComputeStatusResponse:
        return api_models.ComputeStatusResponse(
            status=S.RUNNING if self.desired else S.EMPTY,
            desired_spec_hash=self.desired,
            applied_spec_hash=self.desired,
        )

    async def status(self) -> api_models.ComputeStatusResponse:
        self.calls.append("status")
        return self._status()

    async def configure(
        self, spec: spec_mod.ComputeSpec, *, if_match: str | None
    ) -> api_models.ComputeStatusResponse:
        self.calls.append(f"configure if-match={if_match}")
        if if_match is not None and if_match != self.desired:
            raise client_mod.ComputePrecondition("POST /configure: HTTP 412: If-Match")
        self.desired = spec_mod.spec_hash(spec)
        return self._status()

    async def timings(self) -> dict[str, int]:
        return {}


def _body(generation: int, *, work_mem: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "c", "namespace": "ns", "generation": generation},
        "spec": {
            "computeSpec": {
                "format_version": 1.0,
                "suspend_timeout_seconds": -1,
                "cluster": {
                    "roles": [{"name": "app"}],
                    "databases": [],
                    "settings": [{"name": "work_mem", "value": work_mem, "vartype": "string"}],
                },
            }
        },
    }


def _hash(body: dict[str, Any]) -> str:
    return spec_mod.spec_hash(spec_mod.ComputeSpec.model_validate(body["spec"]["computeSpec"]))


async def _reconcile(
    reconciler: reconcile.Reconciler, body: dict[str, Any], trigger: reconcile.Trigger = CHANGE
) -> reconcile.Outcome:
    outcome = await reconciler.reconcile(body, uid="u", trigger=trigger)
    assert outcome is not None
    assert outcome.error is None
    return outcome


async def test_a_change_is_one_configure_and_no_status_read() -> None:
    compute = FakeCompute()
    client: Any = compute
    reconciler = reconcile.Reconciler(client)
    first, second = _body(1, work_mem="4MB"), _body(2, work_mem="5MB")
    # Nothing known yet: read, decide, push; the push's answer is the observation.
    await _reconcile(reconciler, first)
    assert compute.calls == ["status", "configure if-match=None"]
    compute.calls.clear()
    # Known: straight to the compute, If-Match the spec it wants.
    outcome = await _reconcile(reconciler, second)
    assert compute.calls == [f"configure if-match={_hash(first)}"]
    assert outcome.status.observed_generation == 2
    assert outcome.status.compute_spec_hash == _hash(second)
    assert [(e.type, e.reason) for e in outcome.events][:1] == [("Normal", "Configured")]


async def test_a_replayed_event_pushes_nothing() -> None:
    compute = FakeCompute()
    client: Any = compute
    reconciler = reconcile.Reconciler(client)
    body = _body(1, work_mem="4MB")
    await _reconcile(reconciler, body)
    compute.calls.clear()
    outcome = await _reconcile(reconciler, body)  # the same generation again
    assert compute.calls == ["status"]
    assert outcome.events == []


async def test_a_direct_configure_in_between_is_still_a_reported_conflict() -> None:
    compute = FakeCompute()
    client: Any = compute
    reconciler = reconcile.Reconciler(client)
    await _reconcile(reconciler, _body(1, work_mem="4MB"))
    compute.desired = "f0reign0000000000"  # someone's direct /configure
    compute.calls.clear()
    mine = _body(2, work_mem="5MB")
    outcome = await _reconcile(reconciler, mine)
    assert compute.calls == [
        f"configure if-match={_hash(_body(1, work_mem='4MB'))}",  # 412
        "status",
        "configure if-match=f0reign0000000000",
    ]
    assert compute.desired == _hash(mine)
    assert [(e.type, e.reason) for e in outcome.events][:1] == [("Warning", "ConflictResolved")]


async def test_outcomes_are_published_in_the_order_they_were_rendered() -> None:
    client: Any = FakeCompute()
    reconciler = reconcile.Reconciler(client)
    published: list[int | None] = []
    writing, done = asyncio.Event(), asyncio.Event()

    async def slow(outcome: reconcile.Outcome) -> None:  # a status write taking its time
        writing.set()
        await done.wait()
        published.append(outcome.status.observed_generation)

    async def publish(outcome: reconcile.Outcome) -> None:
        published.append(outcome.status.observed_generation)

    # A periodic reconcile of generation 1 is still writing its status when the change
    # to generation 2 comes: the change's status is written after, never before it.
    timer = asyncio.create_task(
        reconciler.reconcile(
            _body(1, work_mem="4MB"), uid="u", trigger=reconcile.Trigger.RESYNC, publish=slow
        )
    )
    await writing.wait()
    change = asyncio.create_task(
        reconciler.reconcile(
            _body(2, work_mem="5MB"), uid="u", trigger=reconcile.Trigger.CHANGE, publish=publish
        )
    )
    for _ in range(50):  # let the change run as far as it can (no time passes)
        await asyncio.sleep(0)
    assert published == []
    done.set()
    await asyncio.gather(timer, change)
    assert published == [1, 2]
