"""Real pods on the one-node test cluster (tests/cluster): install, reconcile, restart, memory.

    .venv/bin/python -m bench.cluster [--patches 20]

Starts the same cluster as the tier (etcd, kube-apiserver, controller-manager, scheduler,
kubelet, containerd; caches under ~/.cache/compute-ctl) and measures:

- ``install``: ``helm install`` of the chart with a spec until the ComputeSpec is Ready=True;
- ``patch``: ``kubectl patch`` of a reloadable setting until ``status.observedGeneration``
  reaches the new generation (p50, p99), against a direct ``POST /configure`` (external
  API, a JWT signed with that release's key) of the same change to a compute_ctl of a
  second release installed without the operator, measured in the same run (interleaved);
- ``kill``: SIGKILL of the compute_ctl container's main process until its spec is live
  again (the role it creates answers in postgres);
- ``rss``: resident memory of compute_ctl (its Python process, postgres excluded) and of
  the operator, read from /proc of their host PIDs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from compute_ctl.operator.credentials import TokenSource
from tests.cluster import cluster as cluster_
from tests.cluster import toolchain
from tests.cluster.cluster import Namespace, container_pid, restarts, wait_for
from tests.cluster.compute import Compute, spec


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _token_source(ns: Namespace, compute: Compute) -> TokenSource:
    """Sign as the operator would: with the private key of the compute's keys Secret."""
    encoded = ns.kubectl(
        "get", "secret", f"{compute.name}-keys", "-o", r"jsonpath={.data.operator\.pem}"
    )
    key_file = ns.tmp_path / f"{compute.name}-operator.pem"
    key_file.write_bytes(base64.b64decode(encoded))
    return TokenSource(key_file, compute_id=compute.name)


def _configure(compute: Compute, tokens: TokenSource, body: dict[str, Any]) -> bool:
    """A direct POST /configure on the external API (JWT), as a control plane would."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{compute.ports.http}/configure",
        data=json.dumps({"spec": body}).encode(),
        headers={"Content-Type": "application/json", **tokens.header()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        response.read()
    return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        cluster_.started(toolchain.tools()) as cluster,
        tempfile.TemporaryDirectory() as tmp,
        cluster.namespace(Path(tmp)) as ns,
    ):
        return _measure(ns, args)


def _measure(ns: Namespace, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    compute = Compute(ns, "bench")
    started = time.monotonic()
    compute.install(spec(compute.ports, roles=("app",)))
    ns.wait_ready(compute.name, generation=1, timeout=300)
    out["install_s"] = time.monotonic() - started

    direct = Compute(ns, "direct", extra={"operator": {"enabled": False}})
    direct.install(None)
    tokens = _token_source(ns, direct)
    wait_for(
        lambda: _configure(direct, tokens, spec(direct.ports, roles=("app",))),
        what="the direct compute configured",
        timeout=300,
    )

    patched: list[float] = []
    configured: list[float] = []
    for i in range(args.patches):
        work_mem = f"{4 + i % 2}MB"
        generation = compute.generation() + 1
        body = spec(compute.ports, roles=("app",), settings={"work_mem": work_mem})
        started = time.monotonic()
        compute.apply_spec(body)
        ns.wait_ready(compute.name, generation=generation, timeout=120)
        patched.append(time.monotonic() - started)

        body = spec(direct.ports, roles=("app",), settings={"work_mem": work_mem})
        started = time.monotonic()
        _configure(direct, tokens, body)
        configured.append(time.monotonic() - started)
    out["patch_p50_s"] = statistics.median(patched)
    out["patch_p99_s"] = _percentile(patched, 0.99)
    out["configure_p50_s"] = statistics.median(configured)
    out["configure_p99_s"] = _percentile(configured, 0.99)

    out["rss_compute_ctl_mb"] = _rss_mb(container_pid(ns, compute.pod, "compute-ctl"))
    out["rss_operator_mb"] = _rss_mb(container_pid(ns, compute.pod, "operator"))

    before = restarts(ns, compute.pod, "compute-ctl")
    started = time.monotonic()
    os.kill(container_pid(ns, compute.pod, "compute-ctl"), signal.SIGKILL)
    wait_for(lambda: restarts(ns, compute.pod, "compute-ctl") > before, what="restart", timeout=120)

    def ready() -> bool:  # the spec is live again (compute_ctl restarts empty, PGDATA wiped)
        return bool(compute.query("SELECT 1 FROM pg_roles WHERE rolname = 'app'"))

    wait_for(ready, what="Ready again", timeout=300)
    out["kill_to_ready_s"] = time.monotonic() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=20)
    args = parser.parse_args()
    results = run(args)
    for key, value in results.items():
        print(f"{key:22} {value:8.2f}")
    for q in ("p50", "p99"):  # the operator path against the direct API, same run
        ratio = results[f"patch_{q}_s"] / results[f"configure_{q}_s"]
        print(f"{'patch/configure_' + q:22} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
