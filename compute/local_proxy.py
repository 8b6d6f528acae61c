"""local_proxy support (Neon parity, topic 6): the ``config.json`` it reads and the signals it gets.

Owns the file shape (pretty JSON, keys ``jwks`` then ``tls``, null keys omitted,
``jwt_audience`` kept even when null), its atomic write, and the pid-file protocol: a process
that holds an exclusive ``flock`` on the pid file is running and gets
SIGHUP (reload) or SIGTERM (termination).

Difference from Neon: Neon writes the file in place; this writes a temp file in the same
directory and renames it, so local_proxy never reads a half-written config.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path
from typing import Any

import pydantic

from compute_ctl.compute import spec as spec_mod

DEFAULT_DIR = Path("/etc/local_proxy")


class LocalProxyError(RuntimeError):
    """The pid file could not be read/parsed, or the signal could not be sent."""


class _Jwks(pydantic.BaseModel):
    """Neon's ``JwksSettings``: every field required but ``jwt_audience``."""

    id: str
    role_names: list[str]
    jwks_url: str
    provider_name: str
    jwt_audience: str | None = None


class _LocalProxySpec(pydantic.BaseModel):
    jwks: list[_Jwks] | None = None
    tls: spec_mod.TlsConfig | None = None


def check_config(local_proxy_config: dict[str, Any] | None) -> None:
    """Admission's rule: Neon's shape (``ValueError`` naming the field otherwise)."""
    if local_proxy_config is None:
        return
    try:
        _LocalProxySpec.model_validate(local_proxy_config)
    except pydantic.ValidationError as e:
        raise ValueError(spec_mod.format_validation_error(e)) from None


def render_config(local_proxy_config: dict[str, Any], tls: dict[str, str] | None) -> str:
    """The file text: ``tls`` always comes from compute_ctl's own TLS config (or is omitted)."""
    out: dict[str, Any] = {}
    jwks = local_proxy_config.get("jwks")
    if jwks is not None:
        out["jwks"] = [
            {
                "id": j.get("id"),
                "role_names": list(j.get("role_names") or []),
                "jwks_url": j.get("jwks_url"),
                "provider_name": j.get("provider_name"),
                "jwt_audience": j.get("jwt_audience"),
            }
            for j in jwks
        ]
    if tls is not None:
        out["tls"] = {"key_path": tls["key_path"], "cert_path": tls["cert_path"]}
    return json.dumps(out, indent=2)


def write_config(directory: Path, text: str) -> Path:
    """Atomically replace ``<directory>/config.json``; a missing directory is an error."""
    target = directory / "config.json"
    tmp = directory / f".config.json.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def running_pid(directory: Path) -> int | None:
    """The pid holding the lock on ``<directory>/pid``, or None if nobody holds it."""
    path = directory / "pid"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalProxyError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return None  # we got the lock: nobody is running
        raw = os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)
    try:
        pid = int(raw)
    except ValueError:
        raise LocalProxyError(f"{path}: not a pid: {raw!r}") from None
    if pid <= 0 or raw != raw.strip():
        raise LocalProxyError(f"{path}: not a pid: {raw!r}")
    return pid


def signal_running(directory: Path, signum: int) -> int | None:
    """Send ``signum`` to the lock holder; its pid, or None when local_proxy is not running."""
    pid = running_pid(directory)
    if pid is None:
        return None
    try:
        os.kill(pid, signum)
    except OSError as exc:
        raise LocalProxyError(f"cannot signal local_proxy pid {pid}: {exc.strerror}") from exc
    return pid


def configure(
    directory: Path, local_proxy_config: dict[str, Any], tls: dict[str, str] | None
) -> None:
    """Neon's configure step: write the config, then SIGHUP a running local_proxy."""
    write_config(directory, render_config(local_proxy_config, tls))
    signal_running(directory, signal.SIGHUP)


def terminate(directory: Path) -> None:
    """At compute termination: SIGTERM local_proxy, only if its pid file is locked."""
    signal_running(directory, signal.SIGTERM)
