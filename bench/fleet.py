"""A fleet of computes on one real kube-apiserver: what each pod's own operator costs.

    .venv/bin/python -m bench.fleet [--sizes 10,25,50] [--patches 10] [--waves 2]
        [--idle-seconds 30]         (default sizes 1,5: a quick run)

On the real-API tier (Debian's etcd and a kube-apiserver built from Go, as tests/apiserver
starts them) the fleet grows through ``--sizes`` (N=1 is always measured first, as the
baseline). Each member is a ``ComputeSpec`` resource, its own compute_ctl (with its own
small postgres: ``shared_buffers=1MB``, ``max_connections=10``) and its own operator
sidecar at its default resync (30 s), all processes on loopback, the operators as the
shipped ServiceAccount. At each size:

- ``idle``: ``--patches`` spec patches of one compute (a reloadable setting) while the
  others are idle, each timed until ``status.observedGeneration`` shows it reconciled
  (seen through a watch of the bench's own); beside it the baseline, the same change sent
  straight to the external ``POST /configure`` (JWT) of a compute_ctl without an operator;
- ``burst``: ``--waves`` times, every resource patched at once (8 client threads), each
  timed from its own patch to its reconciled status, and the wave until the last one;
- the API server's CPU (utime + stime from ``/proc``) over ``--idle-seconds`` of nothing
  but the fleet's own resyncs, over the idle patches and over the bursts; its watch count
  (``apiserver_longrunning_requests{verb="WATCH"}`` and, where the server still has it,
  ``apiserver_registered_watchers``) from ``/metrics``;
- memory: each sidecar's and compute_ctl's RSS, and the PSS of the whole fleet
  (Python processes and postgres trees), checked against MemAvailable before growing.

Ratios are printed against the direct ``/configure`` of the same size and against N=1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes

from tests.apiserver import controlplane, kube, processes, toolchain
from tests.apiserver import pod as pod_
from tests.apiserver import resources as resources_

SMALL_PG = {"shared_buffers": "1MB", "max_connections": "10"}
_TICK = os.sysconf("SC_CLK_TCK")
_MARGIN_KIB = 2 * 1024 * 1024  # keep 2 GiB available for everyone else


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def _mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def _name(index: int) -> str:
    return f"fleet-{index:03d}"


class Watcher:
    """One watch on the namespace's ComputeSpecs: when each (name, generation) was first
    seen reconciled (``observedGeneration`` and ``Reconciled=True``)."""

    def __init__(self, plane: controlplane.ControlPlane, res: resources_.Resources) -> None:
        self._client = kube.api_client(plane.kubeconfig)
        self._api: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._res = res
        self._seen: dict[tuple[str, int], float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _record(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        generation = status.get("observedGeneration")
        if generation is None or pod_.Pod.condition(status, "Reconciled").get("status") != "True":
            return
        key = (obj["metadata"]["name"], int(generation))
        with self._cond:
            if key not in self._seen:
                self._seen[key] = time.monotonic()
                self._cond.notify_all()

    def _run(self) -> None:
        args = (self._res.group, self._res.version, self._res.namespace, self._res.plural)
        while not self._stop.is_set():
            try:
                listing = self._api.list_namespaced_custom_object(*args)
                for obj in listing["items"]:
                    self._record(obj)
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    self._api.list_namespaced_custom_object,
                    *args,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=300,
                ):
                    self._record(event["object"])
            except Exception:  # an expired watch or a hiccup: list again
                if not self._stop.is_set():
                    time.sleep(0.2)

    def wait(self, name: str, generation: int, *, timeout: float, pod: pod_.Pod) -> float:
        """When ``name`` reached ``generation`` (monotonic time)."""
        with self._cond:
            if not self._cond.wait_for(lambda: (name, generation) in self._seen, timeout):
                raise TimeoutError(
                    f"{name} generation {generation} not reconciled in {timeout} s\n"
                    f"--- operator log:\n{pod.operator.log_tail()}"
                    f"\n--- compute_ctl log:\n{pod.compute.log_tail()}"
                )
            return self._seen[(name, generation)]

    def close(self) -> None:
        self._stop.set()
        self._watch.stop()  # type: ignore[no-untyped-call]
        self._client.close()


@dataclasses.dataclass
class Fleet:
    plane: controlplane.ControlPlane
    admin: Any
    res: resources_.Resources
    kubeconfig: Path
    account: str
    watcher: Watcher
    stack: contextlib.ExitStack
    pods: list[pod_.Pod] = dataclasses.field(default_factory=list)
    settings_index: int = 0

    def _spec(self, pod: pod_.Pod) -> dict[str, Any]:
        self.settings_index += 1
        return pod.spec(settings={**SMALL_PG, "work_mem": f"{4096 + self.settings_index}kB"})

    def grow(self, size: int, *, batch: int = 5) -> None:
        """Start members until there are ``size``, ``batch`` at a time (each batch
        reconciled before the next starts, so start-up load stays bounded)."""
        while len(self.pods) < size:
            started = []
            for _ in range(min(batch, size - len(self.pods))):
                pod = self.stack.enter_context(
                    pod_.running_pod(
                        admin=self.admin,
                        plane=self.plane,
                        resources=self.res,
                        kubeconfig=self.kubeconfig,
                        account=self.account,
                        name=_name(len(self.pods)),
                        resync_interval=30.0,
                        spec=self._spec,
                        operator_log_level="INFO",
                        start_timeout=180.0,
                    )
                )
                self.pods.append(pod)
                started.append(pod)
            for pod in started:
                self.watcher.wait(pod.name, 1, timeout=240, pod=pod)

    def patch(self, pod: pod_.Pod) -> tuple[float, int]:
        """Patch a reloadable setting; (when it was sent, the new generation)."""
        body = self._spec(pod)
        sent = time.monotonic()
        obj = self.res.patch_spec(pod.name, {"cluster": {"settings": body["cluster"]["settings"]}})
        return sent, int(obj["metadata"]["generation"])

    def latency(self, pod: pod_.Pod) -> float:
        sent, generation = self.patch(pod)
        return self.watcher.wait(pod.name, generation, timeout=120, pod=pod) - sent


def _metrics(plane: controlplane.ControlPlane) -> dict[str, float]:
    context = plane.ssl_context(client_cert=plane.admin)
    with urllib.request.urlopen(f"{plane.url}/metrics", timeout=30, context=context) as r:  # noqa: S310
        text = r.read().decode()
    out = {"watch_requests": 0.0}
    for line in text.splitlines():
        if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line:
            out["watch_requests"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("apiserver_registered_watchers{"):
            out["registered_watchers"] = out.get("registered_watchers", 0.0) + float(
                line.rsplit(" ", 1)[1]
            )
    return out


def _apiserver_cpu(plane: controlplane.ControlPlane) -> float:
    assert plane.apiserver is not None
    return _cpu_seconds(plane.apiserver.pid)


def _signal_all(fleet: Fleet) -> None:
    """SIGTERM every member at once, so the pods' own (sequential) stops find them ending."""
    for pod in fleet.pods:
        for proc in (pod.operator.proc, pod.compute.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()


def _direct_samples(direct: processes.Compute, patches: int, offset: int) -> list[float]:
    samples = []
    for i in range(patches):
        spec = resources_.minimal_spec(roles=("app",), databases=("app",))
        settings = {**SMALL_PG, "work_mem": f"{8192 + offset + i}kB"}
        spec["cluster"]["settings"] = direct.settings() + [
            {"name": k, "value": v, "vartype": "string"} for k, v in settings.items()
        ]
        started = time.monotonic()
        assert direct.configure(spec) == 200
        samples.append(time.monotonic() - started)
    return samples


def _memory(fleet: Fleet) -> dict[str, float]:
    tree = _children()
    operators = [_status_kib(p.operator.proc.pid, "VmRSS") for p in fleet.pods if p.operator.proc]
    computes = [_status_kib(p.compute.proc.pid, "VmRSS") for p in fleet.pods if p.compute.proc]
    python_pss = postgres_pss = 0
    for p in fleet.pods:
        for proc in (p.operator.proc, p.compute.proc):
            if proc is not None:
                python_pss += _pss_kib(proc.pid)
        if p.compute.proc is not None:
            postgres_pss += sum(_pss_kib(c) for c in _descendants(p.compute.proc.pid, tree))
    return {
        "operator_rss_min": min(operators) / 1024,
        "operator_rss_median": statistics.median(operators) / 1024,
        "operator_rss_max": max(operators) / 1024,
        "compute_rss_median": statistics.median(computes) / 1024,
        "python_pss_gib": python_pss / 1024 / 1024,
        "postgres_pss_gib": postgres_pss / 1024 / 1024,
        "per_pod_pss_mib": (python_pss + postgres_pss) / 1024 / len(fleet.pods),
    }


def measure(fleet: Fleet, direct: processes.Compute, args: argparse.Namespace) -> dict[str, Any]:
    n = len(fleet.pods)
    out: dict[str, Any] = {"n": n}
    # Idle fleet: only the resyncs and the operators' own watches.
    cpu0, t0 = _apiserver_cpu(fleet.plane), time.monotonic()
    time.sleep(args.idle_seconds)
    out["idle_cpu_ms_per_s"] = (_apiserver_cpu(fleet.plane) - cpu0) / (time.monotonic() - t0) * 1e3
    out.update(_metrics(fleet.plane))
    # One compute changes while the others are idle; the direct baseline interleaved.
    cpu0 = _apiserver_cpu(fleet.plane)
    one = [fleet.latency(fleet.pods[0]) for _ in range(args.patches)]
    out["patch_cpu_ms"] = (_apiserver_cpu(fleet.plane) - cpu0) / args.patches * 1e3
    out["idle_p50"], out["idle_p99"] = statistics.median(one), _percentile(one, 0.99)
    configured = _direct_samples(direct, args.patches, offset=1000 * n)
    out["direct_p50"], out["direct_p99"] = (
        statistics.median(configured),
        _percentile(configured, 0.99),
    )
    # Everyone changes at once.
    burst: list[float] = []
    waves: list[float] = []
    cpu0 = _apiserver_cpu(fleet.plane)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(args.waves):
            started = time.monotonic()
            sent = list(pool.map(fleet.patch, fleet.pods))
            seen = [
                fleet.watcher.wait(p.name, gen, timeout=240, pod=p)
                for p, (_, gen) in zip(fleet.pods, sent, strict=True)
            ]
            burst.extend(s - t for s, (t, _) in zip(seen, sent, strict=True))
            waves.append(max(seen) - started)
    out["burst_cpu_ms"] = (_apiserver_cpu(fleet.plane) - cpu0) / (args.waves * n) * 1e3
    out["burst_p50"], out["burst_p99"] = statistics.median(burst), _percentile(burst, 0.99)
    out["wave_s"] = statistics.median(waves)
    out.update(_memory(fleet))
    return out


def _report(row: dict[str, Any], base: dict[str, Any] | None) -> None:
    ms = 1000.0
    print(f"--- N={row['n']}")
    print(
        f"  idle:  patch->observedGeneration p50 {row['idle_p50'] * ms:7.1f} ms  "
        f"p99 {row['idle_p99'] * ms:7.1f} ms;  direct /configure p50 "
        f"{row['direct_p50'] * ms:6.1f} ms  p99 {row['direct_p99'] * ms:6.1f} ms;  "
        f"ratio p50 {row['idle_p50'] / row['direct_p50']:.2f}x"
    )
    print(
        f"  burst: all {row['n']} at once p50 {row['burst_p50'] * ms:7.1f} ms  "
        f"p99 {row['burst_p99'] * ms:7.1f} ms;  wave {row['wave_s']:.2f} s;  "
        f"ratio p50/direct {row['burst_p50'] / row['direct_p50']:.2f}x"
    )
    watchers = row.get("registered_watchers")
    print(
        f"  apiserver: idle {row['idle_cpu_ms_per_s']:.1f} ms CPU/s, "
        f"{row['patch_cpu_ms']:.1f} ms CPU per idle patch, {row['burst_cpu_ms']:.1f} per burst "
        f"patch;  WATCH requests {row['watch_requests']:.0f}"
        + (f", registered watchers {watchers:.0f}" if watchers is not None else "")
    )
    print(
        f"  memory: operator RSS {row['operator_rss_min']:.1f}/"
        f"{row['operator_rss_median']:.1f}/{row['operator_rss_max']:.1f} MiB (min/median/max), "
        f"compute_ctl RSS median {row['compute_rss_median']:.1f} MiB;  fleet PSS python "
        f"{row['python_pss_gib']:.2f} GiB + postgres {row['postgres_pss_gib']:.2f} GiB "
        f"({row['per_pod_pss_mib']:.0f} MiB per pod)"
    )
    if base is not None and base is not row:
        print(
            f"  vs N={base['n']}: idle p50 {row['idle_p50'] / base['idle_p50']:.2f}x, "
            f"burst p50 {row['burst_p50'] / base['burst_p50']:.2f}x, "
            f"idle API CPU {row['idle_cpu_ms_per_s'] / max(base['idle_cpu_ms_per_s'], 0.1):.1f}x, "
            f"WATCH requests {row['watch_requests'] - base['watch_requests']:+.0f}"
        )


@contextlib.contextmanager
def _tier(
    names: list[str],
) -> Iterator[tuple[controlplane.ControlPlane, Any, resources_.Resources, Path, str]]:
    plane = controlplane.ControlPlane.start(toolchain.binaries())
    admin = kube.api_client(plane.kubeconfig)
    try:
        repo = Path(__file__).resolve().parents[1]
        (crd,) = kube.load_documents(repo / "manifests" / "crd" / "crd.yaml")
        kube.server_side_apply(admin, [crd], namespace=None, dry_run=False)
        kube.wait_crd_established(admin, crd["metadata"]["name"])
        group, version, plural, kind = kube.crd_names(crd)
        namespace = kube.create_namespace(admin, prefix="fleet")
        rbac = kube.load_documents(repo / "manifests" / "rbac.yaml")
        for doc in rbac:  # the shipped Role names one resource: here the whole fleet's
            for rule in doc.get("rules", []):
                if "resourceNames" in rule:
                    rule["resourceNames"] = names
        kube.server_side_apply(admin, rbac, namespace=namespace, dry_run=False)
        (sa,) = [d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"]
        token = kube.service_account_token(admin, namespace=namespace, name=sa)
        kubeconfig = plane.write_kubeconfig(
            plane.workdir / "operator.kubeconfig", user={"token": token}, namespace=namespace
        )
        res = resources_.Resources(
            admin, group=group, version=version, plural=plural, kind=kind, namespace=namespace
        )
        yield plane, admin, res, kubeconfig, f"system:serviceaccount:{namespace}:{sa}"
    finally:
        admin.close()
        plane.stop()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = sorted({1, *args.sizes})
    rows: list[dict[str, Any]] = []
    names = [_name(i) for i in range(max(sizes))]
    with _tier(names) as (plane, admin, res, kubeconfig, account), contextlib.ExitStack() as stack:
        watcher = Watcher(plane, res)
        stack.callback(watcher.close)
        direct = processes.Compute(compute_id="direct")
        stack.callback(shutil.rmtree, direct.workdir, ignore_errors=True)
        stack.callback(direct.stop)
        direct.start()
        kube.wait_for(direct.try_status, what="the direct compute_ctl", timeout=120)
        _direct_samples(direct, 1, offset=0)  # the first /configure starts its postgres
        fleet = Fleet(plane, admin, res, kubeconfig, account, watcher, stack)
        try:
            for size in sizes:
                if rows:  # enough memory for the next members, at the measured cost per pod
                    need = (size - len(fleet.pods)) * rows[-1]["per_pod_pss_mib"] * 1024
                    if _mem_available_kib() - need < _MARGIN_KIB:
                        print(f"stopping before N={size}: not enough memory available")
                        break
                started = time.monotonic()
                fleet.grow(size)
                print(f"N={size}: fleet up in {time.monotonic() - started:.0f} s", flush=True)
                rows.append(measure(fleet, direct, args))
                _report(rows[-1], rows[0])
        finally:
            _signal_all(fleet)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5], metavar="N,N"
    )
    parser.add_argument("--patches", type=int, default=10)
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    load = float(Path("/proc/loadavg").read_text().split()[0])
    quiet = "quiet" if load < 0.5 else "under load"
    print(f"load average before: {load} on {os.cpu_count()} CPUs ({quiet})", flush=True)
    run(args)


if __name__ == "__main__":
    main()
