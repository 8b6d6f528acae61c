"""The kmock tier's moving parts: the emulated API, a real compute_ctl, the operator process.

- ``Api`` drives kmock the way a user drives a cluster (create, merge-patch, delete over
  HTTP) and waits on its watch streams for a condition on the resource or an Event: no
  polling of kmock's memory, no sleeps. kmock generates no ``metadata.generation``, so
  a spec patch bumps it explicitly, as the API server would.
- ``Compute`` is compute_ctl started as ``python -m compute_ctl.compute`` (real
  PostgreSQL underneath, spec-less config, free loopback ports), read through its
  internal HTTP API.
- ``Operator`` is ``python -m compute_ctl.operator --server <kmock>``, its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock

from compute_ctl.operator import resource
from tests import pgserver
from tests.operator import emulator as emulator_mod
from tests.operator import keys as keys_mod
from tests.operator import procs

__all__ = [
    "DIFFBASE",
    "NAME",
    "NAMESPACE",
    "Api",
    "Compute",
    "Operator",
    "compute_spec",
    "condition",
    "diffbase",
]

NAMESPACE = "ns1"
NAME = "c1"
# kopf's record of the last spec it handled (handlers.build_settings): written after the
# handler has written the status.
DIFFBASE = f"{resource.GROUP}/last-handled-spec"
Predicate = Callable[[str, dict[str, Any]], bool]


def compute_spec(
    *,
    port: int,
    roles: tuple[str, ...] = ("app",),
    databases: tuple[tuple[str, str], ...] = (("app", "app"),),
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A local-storage ComputeSpec listening on ``port`` (loopback only)."""
    conf = {
        "port": (str(port), "integer"),
        "listen_addresses": ("127.0.0.1", "string"),
        "fsync": ("off", "bool"),
        "max_connections": ("50", "integer"),
    }
    for name, value in (settings or {}).items():
        conf[name] = (value, "string")
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "cluster_id": NAME,
            "name": NAME,
            "roles": [{"name": r, "encrypted_password": None, "options": None} for r in roles],
            "databases": [{"name": d, "owner": o} for d, o in databases],
            "settings": [{"name": k, "value": v, "vartype": t} for k, (v, t) in conf.items()],
        },
    }


@dataclasses.dataclass
class Api:
    emulator: emulator_mod.Emulator
    session: aiohttp.ClientSession
    generation: int = 0

    @property
    def base(self) -> str:
        return str(self.emulator.url).rstrip("/")

    @property
    def collection(self) -> str:
        return (
            f"{self.base}/apis/{resource.GROUP}/{resource.VERSION}"
            f"/namespaces/{NAMESPACE}/{resource.PLURAL}"
        )

    @property
    def events_url(self) -> str:
        return f"{self.base}/api/v1/namespaces/{NAMESPACE}/events"

    async def create(self, spec: dict[str, Any]) -> None:
        self.generation = 1
        body = {
            "apiVersion": f"{resource.GROUP}/{resource.VERSION}",
            "kind": resource.KIND,
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": "00000000-0000-4000-8000-000000000001",
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {resource.SPEC_FIELD: spec},
        }
        async with self.session.post(self.collection, json=body) as response:
            assert response.status < 300, await response.text()

    async def replace_spec(self, spec: dict[str, Any]) -> int:
        """Replace ``spec.computeSpec`` and bump the generation; returns the new one."""
        generation = await self.try_replace_spec(spec)
        assert generation is not None, "the API server refused the spec"
        return generation

    async def try_replace_spec(self, spec: dict[str, Any]) -> int | None:
        """``replace_spec``, or ``None`` when the API server's schema refuses the spec."""
        # A JSON patch: a merge patch would merge the old and new specs' nested objects.
        ops = [
            {"op": "replace", "path": f"/spec/{resource.SPEC_FIELD}", "value": spec},
            {"op": "replace", "path": "/metadata/generation", "value": self.generation + 1},
        ]
        headers = {"Content-Type": "application/json-patch+json"}
        async with self.session.patch(
            f"{self.collection}/{NAME}", data=json.dumps(ops), headers=headers
        ) as response:
            if response.status == 422:
                return None
            assert response.status < 300, await response.text()
        self.generation += 1
        return self.generation

    async def delete(self) -> None:
        async with self.session.delete(f"{self.collection}/{NAME}") as response:
            assert response.status < 300, await response.text()

    def current(self) -> dict[str, Any] | None:
        key = self._key
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.emulator.objects[key].raw
        return raw

    @property
    def _key(self) -> tuple[kmock.resource, str, str]:
        # A parsed resource: `in` does not parse string keys (kmock 0.8).
        return (kmock.resource(resource.GROUP, resource.VERSION, resource.PLURAL), NAMESPACE, NAME)

    def mark(self) -> int:
        """A point in the resource's history, for ``wait_for(since=...)``."""
        return (
            len(self.emulator.objects[self._key].history)
            if self._key in self.emulator.objects
            else 0
        )

    async def wait_for(
        self, predicate: Predicate, *, what: str, since: int | None = None, timeout: float = 60
    ) -> Any:
        """The first version of our resource for which ``predicate(type, obj)`` holds.

        Versions are fed in order: with ``since`` (a ``mark()``), those written since then
        first (kmock keeps the history), so a state that came and went before the watch
        connected is not missed; then the current one and every later one.
        """
        return await self._watch(
            self.collection, predicate, what=what, timeout=timeout, since=since
        )

    async def wait_gone(self, *, timeout: float = 60) -> None:
        """Until the resource is deleted for good (its finalizers released)."""

        def gone(kind: str, obj: dict[str, Any]) -> bool:
            return kind == "DELETED" or self.current() is None

        await self._watch(
            self.collection, gone, what="the resource deleted", timeout=timeout, since=0
        )

    def _from_history(self, predicate: Predicate, since: int) -> dict[str, Any] | None:
        if self._key not in self.emulator.objects:
            return None
        for version in self.emulator.objects[self._key].history[since:]:
            raw = version.raw if version is not None else {}
            if predicate("MODIFIED" if version is not None else "DELETED", raw):
                return raw
        return None

    async def wait_for_event(
        self, reason: str, *, timeout: float = 60, contains: str = ""
    ) -> dict[str, Any]:
        def match(kind: str, event: dict[str, Any]) -> bool:
            return (
                event.get("reason") == reason
                and event["involvedObject"]["name"] == NAME
                and contains in event.get("message", "")
            )

        found: dict[str, Any] = await self._watch(
            self.events_url, match, what=f"an Event {reason}", timeout=timeout
        )
        return found

    async def _watch(
        self,
        url: str,
        predicate: Predicate,
        *,
        what: str,
        timeout: float,
        since: int | None = None,
    ) -> Any:
        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                async with self.session.get(url, params={"watch": "true"}) as response:
                    if since is not None:
                        # The watch is subscribed once its response starts: history first.
                        found = self._from_history(predicate, since)
                        if found is not None:
                            return found
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if url == self.collection and obj.get("metadata", {}).get("name") != NAME:
                            continue
                        last = obj
                        if predicate(event["type"], obj):
                            return obj
        except TimeoutError:
            pass
        raise AssertionError(f"timed out waiting for {what}; last seen: {json.dumps(last)[:3000]}")

    def events(self) -> list[dict[str, Any]]:
        found = []
        for key, obj in self.emulator.objects.items():
            if key[0].plural == "events" and not obj.deleted:
                raw = obj.raw
                if raw.get("involvedObject", {}).get("name") == NAME:
                    found.append(raw)
        return found


def diffbase(obj: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(DIFFBASE)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return {}


@dataclasses.dataclass
class Compute:
    """compute_ctl with real PostgreSQL, as a child process."""

    proc: subprocess.Popen[bytes]
    url: str  # the external API (JWT), as the operator calls it
    internal_url: str
    pg_port: int
    workdir: Path
    log: Path
    keys: keys_mod.Keys

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Compute]:
        workdir = pgserver.scratch_dir("operator-compute-")
        external, internal, pg_port = (pgserver.free_port() for _ in range(3))
        keys = keys_mod.make(workdir, NAME)
        log = workdir / "compute_ctl.log"
        argv = procs.python_module(
            "compute_ctl.compute",
            f"--pgdata={workdir / 'pgdata'}",
            f"--connstr=postgresql://cloud_admin@127.0.0.1:{pg_port}/postgres",
            f"--compute-id={NAME}",
            f"--config={keys.config}",
            f"--external-http-port={external}",
            f"--internal-http-port={internal}",
            "--external-http-host=127.0.0.1",
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=procs.python_env()
            )
        compute = cls(
            proc,
            f"http://127.0.0.1:{external}",
            f"http://127.0.0.1:{internal}",
            pg_port,
            workdir,
            log,
            keys,
        )
        try:
            yield compute
        finally:
            compute.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def auth(self) -> dict[str, str]:
        """The header of an authorized client (a token signed with the operator's key)."""
        return keys_mod.bearer(self.keys, NAME)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.url}/status", headers=self.auth()) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def wait_listening(self, session: aiohttp.ClientSession, *, timeout: float = 30) -> None:
        """compute_ctl answers /status (it has no push channel: poll with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"compute_ctl exited: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                await self.status(session)
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"compute_ctl is not listening: {self.log_tail()}")
            await asyncio.sleep(0.05)


@dataclasses.dataclass
class Operator:
    proc: asyncio.subprocess.Process
    log: Path

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        *,
        api_url: str,
        compute_url: str,
        workdir: Path,
        key_file: Path | None = None,
        resync: float = 1.0,
        log_level: str = "DEBUG",
    ) -> AsyncIterator[Operator]:
        log = workdir / "operator.log"
        argv = procs.python_module(
            "compute_ctl.operator",
            f"--name={NAME}",
            f"--namespace={NAMESPACE}",
            f"--compute-url={compute_url}",
            *([f"--key-file={key_file}"] if key_file else []),
            f"--server={api_url}",
            f"--resync-interval={resync}",
            "--busy-timeout=60",
            "--retry-delay=0.5",
            "--delete-retries=2",
            f"--log-level={log_level}",
        )
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=out, stderr=subprocess.STDOUT, env=procs.python_env()
            )
        operator = cls(proc, log)
        try:
            yield operator
        finally:
            await operator.stop()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            # kopf 1.45 lets a timer run until its 5 s hung-task deadline after SIGTERM; the
            # operator's exit is not under test, so do not wait for it.
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=1)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def wait_for_log(self, text: str, *, timeout: float = 30) -> None:
        """Until the operator logs ``text`` (a file has no push channel: poll, with a deadline)."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"the operator never logged {text!r}: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, size: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")
