"""local_proxy config file and pid-lock signalling, against a real process that holds the lock."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compute_ctl.compute import local_proxy

HOLDER = r"""
import fcntl, os, signal, sys, time
d = sys.argv[1]
counts = {"hup": 0, "term": 0}
def on(sig, _f):
    counts["hup" if sig == signal.SIGHUP else "term"] += 1
    with open(os.path.join(d, "counts.tmp"), "w") as f:
        f.write(f"{counts['hup']} {counts['term']}")
    os.replace(os.path.join(d, "counts.tmp"), os.path.join(d, "counts"))
signal.signal(signal.SIGHUP, on)
signal.signal(signal.SIGTERM, on)
fd = os.open(os.path.join(d, "pid"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
open(os.path.join(d, "ready"), "w").close()
while True:
    time.sleep(0.05)
"""


def _wait(cond: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def lock_holder(directory: Path) -> Iterator[Path]:
    """A process holding local_proxy's pid lock in ``directory``, counting its signals."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)])
    try:
        _wait(lambda: (directory / "ready").exists(), "lock holder")
        yield directory
    finally:
        proc.kill()
        proc.wait(timeout=20)


def _counts(d: Path) -> tuple[int, int]:
    try:
        hup, term = (d / "counts").read_text().split()
    except FileNotFoundError:
        return (0, 0)
    return (int(hup), int(term))


SPEC = {
    "jwks": [
        {
            "id": "k1",
            "role_names": ["authenticated"],
            "jwks_url": "https://example.invalid/jwks",
            "provider_name": "p",
            "jwt_audience": None,
        }
    ],
    "tls": {"key_path": "/ignored", "cert_path": "/ignored"},
}


def test_config_shape_and_tls_override(tmp_path: Path) -> None:
    local_proxy.write_config(tmp_path, local_proxy.render_config(SPEC, None))
    text = (tmp_path / "config.json").read_text()
    data = json.loads(text)
    assert list(data) == ["jwks"]  # the spec's tls is never used
    assert data["jwks"][0]["jwt_audience"] is None
    assert text.startswith('{\n  "jwks": [')
    tls = {"key_path": "/k", "cert_path": "/c"}
    local_proxy.write_config(tmp_path, local_proxy.render_config({}, tls))
    assert json.loads((tmp_path / "config.json").read_text()) == {"tls": tls}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp left behind
    with pytest.raises(FileNotFoundError):
        local_proxy.write_config(tmp_path / "missing", "{}")


def test_no_holder_means_no_signal(tmp_path: Path) -> None:
    assert local_proxy.signal_running(tmp_path, signal.SIGHUP) is None
    (tmp_path / "pid").write_text("1")  # stale file, nobody holds the lock
    local_proxy.configure(tmp_path, SPEC, None)
    assert (tmp_path / "config.json").exists()


def test_one_sighup_per_configure_and_sigterm(tmp_path: Path) -> None:
    with lock_holder(tmp_path):
        local_proxy.configure(tmp_path, SPEC, None)
        _wait(lambda: _counts(tmp_path) == (1, 0), "first SIGHUP")
        local_proxy.configure(tmp_path, SPEC, None)
        _wait(lambda: _counts(tmp_path) == (2, 0), "second SIGHUP")
        local_proxy.terminate(tmp_path)
        _wait(lambda: _counts(tmp_path) == (2, 1), "SIGTERM")


def test_bad_pid_content_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pid").write_text("")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys,time\n"
            "fd=os.open(sys.argv[1],os.O_RDWR)\nfcntl.flock(fd,fcntl.LOCK_EX)\n"
            "os.write(fd,b' 12\\n')\nopen(sys.argv[1]+'.ok','w').close()\ntime.sleep(60)",
            str(tmp_path / "pid"),
        ]
    )
    try:
        _wait(lambda: (tmp_path / "pid.ok").exists(), "lock holder")
        with pytest.raises(local_proxy.LocalProxyError, match="not a pid"):
            local_proxy.signal_running(tmp_path, signal.SIGHUP)
    finally:
        holder.kill()
        holder.wait(timeout=20)
