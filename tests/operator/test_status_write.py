"""The handler writes the status itself, before kopf's own patches.

kopf writes its diffbase annotation (a metadata patch) after a handler and then what the
handler put in its ``patch``. The handlers write the status first, through the status
subresource: a change shows in ``status.observedGeneration`` while kopf's annotation
patch is still to come, or failing. A status the API server refuses to the handler goes
into kopf's ``patch`` instead, so it is written all the same. (That statuses are written
in the order they were rendered is test_push_path's.)
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from compute_ctl.compute import spec as spec_mod
from tests.operator import emulator, harness
from tests.operator.harness import Api, Compute, Operator, condition, diffbase


def _reconciled(generation: int) -> harness.Predicate:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get("observedGeneration") == generation and (
            condition(obj, "Reconciled").get("status") == "True"
        )

    return check


def _is_diffbase_patch(request: kmock.Request) -> bool:
    data = request.data
    return (
        request.method == kmock.method.PATCH
        and request.subresource != "status"
        and isinstance(data, dict)
        and harness.DIFFBASE in ((data.get("metadata") or {}).get("annotations") or {})
    )


async def _applied(api: Api, compute: Compute) -> dict[str, Any]:
    """Generation 1 reconciled, and recorded as handled by kopf (which comes after)."""
    await api.create(harness.compute_spec(port=compute.pg_port))

    def handled(kind: str, obj: dict[str, Any]) -> bool:
        return _reconciled(1)(kind, obj) and diffbase(obj) is not None

    obj: dict[str, Any] = await api.wait_for(handled, what="generation 1 handled", since=0)
    return obj


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.kmock(cls=emulator.Emulator)
async def test_the_status_shows_while_kopfs_annotation_patch_is_refused(
    api: Api, compute: Compute
) -> None:
    await compute.wait_listening(api.session)
    # A long resync: the periodic reconcile must not be what writes the status.
    async with Operator.running(
        api_url=api.base,
        compute_url=compute.url,
        key_file=compute.keys.private,
        workdir=compute.workdir,
        resync=300.0,
    ) as operator:
        try:
            await _status_before_annotation(api, compute)
        finally:
            print("--- operator log ---\n" + operator.log_tail())


async def _status_before_annotation(api: Api, compute: Compute) -> None:
    first = await _applied(api, compute)
    before = await compute.status(api.session)

    def refuse_diffbase(request: kmock.Request) -> int | None:
        return 500 if _is_diffbase_patch(request) else None

    api.emulator.fault = refuse_diffbase
    spec = harness.compute_spec(port=compute.pg_port, settings={"work_mem": "5MB"})
    generation = await api.replace_spec(spec)
    # kopf cannot record the change as handled, yet the status already reports it.
    obj = await api.wait_for(_reconciled(generation), what="generation 2 reconciled", timeout=20)
    assert diffbase(obj) == diffbase(first)
    api.emulator.fault = None

    # kopf retries its patch and records the change; the compute got it once.
    await api.wait_for(
        lambda kind, obj: diffbase(obj) not in (None, diffbase(first)),
        what="kopf's annotation written",
        timeout=30,
    )
    after = await compute.status(api.session)
    assert after["desired_generation"] == before["desired_generation"] + 1
    assert after["desired_spec_hash"] == spec_mod.spec_hash(
        spec_mod.ComputeSpec.model_validate(spec)
    )
    configured = [e for e in api.events() if e["reason"] == "Configured"]
    assert sum(f"(generation {generation})" in e["message"] for e in configured) == 1


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.kmock(cls=emulator.Emulator)
async def test_a_status_the_api_refuses_to_the_handler_is_written_by_kopf(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    await _applied(api, compute)
    refused: list[kmock.Request] = []

    def refuse_the_handlers_status(request: kmock.Request) -> int | None:
        # The handler's own write (kopf's requests carry kopf's User-Agent).
        mine = request.headers.get("User-Agent") == "compute-ctl-operator"
        if mine and request.method == kmock.method.PATCH and request.subresource == "status":
            refused.append(request)
            return 500
        return None

    api.emulator.fault = refuse_the_handlers_status
    spec = harness.compute_spec(port=compute.pg_port, settings={"work_mem": "5MB"})
    generation = await api.replace_spec(spec)
    await api.wait_for(_reconciled(generation), what="generation 2 reconciled", timeout=30)
    assert refused
    await sidecar.wait_for_log("kopf will write it")
