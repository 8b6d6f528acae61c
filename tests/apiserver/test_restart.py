"""A compute_ctl that restarts gets its spec back within about a second (defect 11).

The periodic resync is a minute here: only the operator's quick check of ``GET /status``
(``--watch-interval``) can notice that the compute came back ``empty``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.apiserver import conftest
from tests.apiserver import pod as pod_

pytestmark = pytest.mark.apiserver


def test_a_restarted_compute_gets_its_spec_again_at_once(
    admin: Any, control_plane: Any, resources: Any, operator_account: conftest.Account
) -> None:
    with pod_.running_pod(
        admin=admin,
        plane=control_plane,
        resources=resources,
        kubeconfig=operator_account.kubeconfig,
        account=f"system:serviceaccount:{operator_account.namespace}:{operator_account.name}",
        resync_interval=60.0,
    ) as pod:
        pod.wait_reconciled(1)
        pod.compute.stop()
        pod.compute.start()
        back = pod.wait(pod.compute.try_status, what="compute_ctl back")
        listening = time.monotonic()
        assert back["status"] == "empty"

        def spec_received() -> bool:
            return int(pod.compute.status()["desired_generation"]) >= 1

        pod.wait(spec_received, what="the spec pushed again", timeout=20)
        elapsed = time.monotonic() - listening
        # About a second (the check interval), far from the 60 s resync; generous for a
        # loaded 2-core machine.
        assert elapsed < 8, elapsed
        pod.wait_reconciled(1)
