"""Deleting a compute: it is terminated whatever state it is in, and nothing stays behind.

Defect 1 (issue 13): a compute still starting answers ``/terminate`` with 412; the
operator must retry until it can terminate it, not drop its finalizer with postgres still
running.
"""

from __future__ import annotations

import os

import pytest

from tests.apiserver import conftest

pytestmark = pytest.mark.apiserver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_deleting_a_starting_compute_waits_and_terminates_it(
    start_pod: conftest.PodFactory,
) -> None:
    with start_pod(
        resync_interval=1.0,
        compute_env={"FAILPOINTS": "before-apply=pause"},
    ) as pod:
        # The operator pushed the spec: postgres runs, the start is held before the apply.
        pidfile = pod.compute.workdir / "pgdata" / "postmaster.pid"

        def held() -> bool:
            return pod.compute.status()["status"] == "init" and pidfile.exists()

        pod.wait(held, what="compute in init with postgres running")
        pid = pod.compute.postmaster_pid()
        # An operator restart while it starts (or a /configure that timed out) leaves the
        # compute starting when the deletion is handled.
        pod.operator.stop()
        pod.resources.delete(pod.name)
        pod.operator.start(resync_interval=1.0)
        pod.wait(lambda: "412" in pod.operator.log_tail(20000), what="the operator met the 412")
        assert pod.resources.exists(pod.name), "the finalizer was dropped on a 412"
        assert _alive(pid)
        pod.compute.failpoint("before-apply", "off")
        pod.wait(lambda: not pod.resources.exists(pod.name), what="the resource gone")
        (event,) = pod.events("Terminated")
        assert "terminated" in event.message
        assert pod.events("TerminateFailed") == []
        pod.wait(lambda: not _alive(pid), what="postgres stopped")
