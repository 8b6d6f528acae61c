"""Helpers for core's tests: specs, params, condition waits, and process inspection."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from compute_ctl.compute import node as node_mod
from compute_ctl.compute import params as params_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state
from tests import pgserver

SUPERUSER = "cloud_admin"
ROLE_PASSWORD = "s3cret pass'word"
REPO = Path(__file__).resolve().parent.parent.parent


@functools.cache
def scram(password: str, *, salt: bytes = b"core-tests-salt!") -> str:
    """A SCRAM-SHA-256 verifier, as the control plane sends them."""
    import base64
    import hashlib
    import hmac

    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server_key)}"


def spec_json(
    *,
    port: int,
    roles: Sequence[str] = ("app_owner",),
    databases: Sequence[tuple[str, str]] = (("appdb", "app_owner"),),
    settings: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    verifier = scram(ROLE_PASSWORD)
    return {
        "format_version": 1.0,
        "suspend_timeout_seconds": -1,
        "cluster": {
            "roles": [{"name": r, "encrypted_password": verifier} for r in roles],
            "databases": [{"name": d, "owner": o} for d, o in databases],
            "settings": [
                {"name": "port", "value": str(port), "vartype": "integer"},
                {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
                {"name": "fsync", "value": "off", "vartype": "bool"},
                {"name": "shared_buffers", "value": "16MB", "vartype": "string"},
                {"name": "max_connections", "value": "40", "vartype": "integer"},
                *({"name": n, "value": v, "vartype": t} for n, v, t in settings),
            ],
        },
    }


def make_spec(*, port: int, **kwargs: Any) -> spec_mod.ComputeSpec:
    return spec_mod.ComputeSpec.model_validate(spec_json(port=port, **kwargs))


def make_params(*, pgdata: Path, port: int, **overrides: Any) -> params_mod.Params:
    values: dict[str, Any] = {
        "pgdata": pgdata,
        "connstr": f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres",
        "compute_id": "compute-test",
        "external_http_port": pgserver.free_port(),
        "internal_http_port": pgserver.free_port(),
        "failed_exit_delay": 0.0,
    }
    values.update(overrides)
    return params_mod.Params(**values)


def role_dsn(port: int, *, role: str = "app_owner", dbname: str = "appdb") -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host="127.0.0.1", port=port, user=role, dbname=dbname, password=ROLE_PASSWORD
    )


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition with a deadline (never a bare sleep to synchronise)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def wait_until_sync(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def processes_in(pgdata: Path) -> list[int]:
    """Live processes whose working directory is ``pgdata`` (every postgres process chdirs
    into its data directory)."""
    target = str(pgdata.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target and alive(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


@contextlib.asynccontextmanager
async def run_node(
    node: node_mod.ComputeNode, *, until: state.ComputeStatus | None = state.ComputeStatus.RUNNING
) -> AsyncIterator[asyncio.Task[int]]:
    """Run ``node.run()`` in a task; wait for ``until``; terminate and reap on exit."""
    task = asyncio.create_task(node.run())
    try:
        if until is not None:
            waiting = asyncio.create_task(
                node.state.wait_for(lambda s: s.status in (until, state.ComputeStatus.FAILED))
            )
            await asyncio.wait({waiting, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            assert node.state.status is until, f"{node.state.status}: {node.state.error}"
        yield task
    finally:
        if not task.done():
            node.request_stop("immediate")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def config(spec_json: dict[str, Any] | None) -> spec_mod.ComputeConfig:
    return spec_mod.ComputeConfig.model_validate({"spec": spec_json})
