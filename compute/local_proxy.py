"""local_proxy support (Neon parity, topic 6): the ``config.json`` it reads and the signals it gets.

Owns the file shape (pretty JSON, keys ``jwks`` then ``tls``, null keys omitted,
``jwt_audience`` kept even when null), its atomic write, and the pid-file protocol: a process
that holds an exclusive ``flock`` on the pid file is running and gets
SIGHUP (reload) or SIGTERM (termination).

Differences from Neon: Neon writes the file in place; this writes a temp file in the same
directory and renames it, so local_proxy never reads a half-written config. Neon's
compute_ctl runs as postgres; this one runs as root, so nothing in the directory is
trusted: no link is followed, a pid file must be a regular file, and one that another
user owns may only name that user's process (``running_pid``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pydantic

from compute_ctl.compute import pgtools, safefs
from compute_ctl.compute import spec as spec_mod

DEFAULT_DIR = Path("/etc/local_proxy")
CONFIG_NAME = "config.json"
_SELF = pgtools.OsUser(name="root", uid=None, gid=None, home="/")  # "as ourselves"


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
    """Atomically replace ``<directory>/config.json``; a missing directory is an error.

    Through ``safefs``: a fresh ``O_EXCL|O_NOFOLLOW`` temp file, 0644 and compute_ctl's
    own, renamed over the target, so nothing another user planted in the directory
    becomes the config."""
    safefs.write_bytes(directory, CONFIG_NAME, text.encode(), owner=_SELF, mode=0o644)
    return directory / CONFIG_NAME


def _uid_of(pid: int) -> int | None:
    """The real uid of process ``pid``, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def running_pid(directory: Path) -> int | None:
    """The pid holding the lock on ``<directory>/pid``, or None if nobody holds it.

    The directory may be writable by the user local_proxy runs as, and compute_ctl is
    root: the pid file is opened without following a link and without blocking (a FIFO),
    must be a regular file, its content is never echoed, and a pid file another user owns
    may only name a process of that user."""
    path = directory / "pid"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalProxyError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LocalProxyError(f"{path}: not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return None  # we got the lock: nobody is running
        raw = os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)
    if not raw.isdigit() or int(raw) <= 0:
        raise LocalProxyError(f"{path}: not a pid")
    pid = int(raw)
    if st.st_uid != 0 and _uid_of(pid) not in (st.st_uid, None):
        raise LocalProxyError(
            f"{path} (uid {st.st_uid}) names pid {pid}, a process of another user: not signalled"
        )
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
