"""The pod's probes against a real compute_ctl (issue 13).

Defect 9: readiness is one rule with the resource's ``Ready`` condition: postgres serves,
including during a reconfiguration. Defect 10: a compute ``failed`` for longer than
``--failed-exit-delay`` fails liveness (or compute_ctl exits), so Kubernetes restarts it.
(A failed reconfiguration no longer makes a compute ``failed``: it keeps serving its last
applied spec and retries.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.apiserver import processes
from tests.apiserver import resources as resources_


def _code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            code: int = response.status
            return code
    except urllib.error.HTTPError as e:
        return e.code


def _until(probe: Callable[[], Any], what: str, compute: processes.Compute) -> Any:
    deadline = time.monotonic() + 60
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: {compute.log_tail()}"
        time.sleep(0.05)


def _spec(compute: processes.Compute, *extra_db: dict[str, Any]) -> dict[str, Any]:
    spec = resources_.minimal_spec(roles=("app",), databases=("app",))
    spec["cluster"]["settings"] = compute.settings()
    spec["cluster"]["databases"] += list(extra_db)
    return spec


@pytest.fixture
def compute() -> Iterator[processes.Compute]:
    running = processes.Compute(compute_id="probes")
    running.start("--failed-exit-delay=1", "--failpoints")
    try:
        _until(running.try_status, "compute_ctl up", running)
        assert running.configure(_spec(running)) == 200
        yield running
    finally:
        running.stop()
        shutil.rmtree(running.workdir, ignore_errors=True)


def test_readiness_holds_during_a_reconfiguration(compute: processes.Compute) -> None:
    readyz = f"{compute.url}/readyz"
    assert _code(readyz) == 200
    compute.failpoint("before-apply", "pause")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pushed = pool.submit(compute.configure, _spec(compute, {"name": "more", "owner": "app"}))
        _until(lambda: compute.status()["status"] == "configuration", "reconfiguring", compute)
        # postgres serves throughout, and the resource says Ready=True: so does the pod.
        assert _code(readyz) == 200
        compute.failpoint("before-apply", "off")
        assert pushed.result(timeout=60) == 200
    assert _code(readyz) == 200


def test_a_failed_compute_is_restarted() -> None:
    """A start that fails leaves the compute ``failed``: past ``--failed-exit-delay`` (1 s)
    liveness fails or compute_ctl exits; either way Kubernetes restarts it."""
    compute = processes.Compute(compute_id="probes-failed")
    compute.start("--failed-exit-delay=1")
    try:
        _until(compute.try_status, "compute_ctl up", compute)
        template = [{"name": "TEMPLATE", "value": "no_such_template", "vartype": "string"}]
        broken = _spec(compute, {"name": "orphan", "owner": "app", "options": template})
        with contextlib.suppress(urllib.error.HTTPError, OSError):  # 500: the start failed
            compute.configure(broken)
        healthz = f"{compute.url}/healthz"

        def restarted() -> bool:
            if not compute.running():
                return compute.proc is not None and compute.proc.returncode != 0
            with contextlib.suppress(OSError):
                return _code(healthz) == 503
            return False

        _until(restarted, "liveness failing or compute_ctl exited", compute)
    finally:
        compute.stop()
        shutil.rmtree(compute.workdir, ignore_errors=True)
