"""A forged ``Rejected`` in the stored status (issue 12, item 25).

Whoever may patch the status subresource could write ``Reconciled=False, Rejected`` for
the resource's spec; an operator that trusted it after a restart would never push that
spec again. The operator here re-derives a refusal from compute_ctl's own answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.operator import emulator
from tests.operator.harness import NAME, Api, Compute, Operator, condition
from tests.operator.test_operator_e2e import apply_and_wait, spec_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.kmock(cls=emulator.Emulator)]


async def _forge_rejected(api: Api, spec_hash: str) -> None:
    forged = {
        "status": {
            "specHash": spec_hash,
            "conditions": [
                {
                    "type": "Reconciled",
                    "status": "False",
                    "reason": "Rejected",
                    "message": "HTTP 400: forged",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    headers = {"Content-Type": "application/merge-patch+json"}
    async with api.session.patch(
        f"{api.collection}/{NAME}/status", data=json.dumps(forged), headers=headers
    ) as response:
        assert response.status < 300, await response.text()


async def test_a_forged_rejection_does_not_freeze_a_restarted_operator(
    api: Api, compute: Compute, sidecar: Operator
) -> None:
    obj = await apply_and_wait(api, compute)
    ours = obj["status"]["specHash"]
    await sidecar.stop()
    # While the operator is away: the compute runs another spec, and the stored status
    # claims compute_ctl refused the resource's own.
    foreign = spec_for(compute, roles=("app", "intruder"))
    async with api.session.post(
        f"{compute.url}/configure", json={"spec": foreign}, headers=compute.auth()
    ) as response:
        assert response.status == 200, await response.text()
    await _forge_rejected(api, ours)
    current = api.current()
    assert current is not None
    assert condition(current, "Reconciled")["reason"] == "Rejected"

    async with Operator.running(
        api_url=api.base,
        compute_url=compute.url,
        key_file=compute.keys.private,
        workdir=compute.workdir,
    ):
        deadline = time.monotonic() + 30
        observed: dict[str, Any] = {}
        while time.monotonic() < deadline:
            observed = await compute.status(api.session)
            if observed["desired_spec_hash"] == ours and observed["status"] == "running":
                break
            await asyncio.sleep(0.2)
        assert observed["desired_spec_hash"] == ours, "the forged Rejected froze reconciling"

        def reconciled(kind: str, obj: dict[str, Any]) -> bool:
            return condition(obj, "Reconciled").get("status") == "True"

        await api.wait_for(reconciled, what="Reconciled again")
