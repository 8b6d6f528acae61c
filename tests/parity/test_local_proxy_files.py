"""local_proxy's directory as another user may have prepared it (review findings).

compute_ctl runs as root; ``/etc/local_proxy`` may be writable by the user local_proxy
runs as. Whatever that user plants there, root must not read another file through a link
(and echo it), hang on a FIFO, signal a process of another user, or write a config.json
that user owns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from compute_ctl.compute import local_proxy, safefs

NOBODY = 65534
SECRET = "root:$6$not-for-your-eyes"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (as a running local_proxy would)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_linked_pid_file_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    d = tmp_path / "lp"
    d.mkdir()
    (d / "pid").symlink_to(secret)
    with _locked(secret), pytest.raises(local_proxy.LocalProxyError) as caught:
        local_proxy.running_pid(d)
    assert "not-for-your-eyes" not in str(caught.value)


def test_a_fifo_pid_file_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pid")
    outcome: list[object] = []

    def probe() -> None:
        try:
            outcome.append(local_proxy.running_pid(tmp_path))
        except local_proxy.LocalProxyError as e:
            outcome.append(e)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the open() before failing
        os.close(os.open(tmp_path / "pid", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("running_pid blocked on a FIFO")
    assert outcome
    assert isinstance(outcome[0], local_proxy.LocalProxyError)


def test_a_pid_file_of_another_user_cannot_name_roots_process(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        pid = tmp_path / "pid"
        pid.write_text(str(victim.pid))
        os.chown(pid, NOBODY, NOBODY)
        with _locked(pid), pytest.raises(local_proxy.LocalProxyError, match="another user"):
            local_proxy.signal_running(tmp_path, signal.SIGTERM)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_planted_temp_files_do_not_become_the_config(tmp_path: Path) -> None:
    for name in (f".config.json.{os.getpid()}.tmp", safefs.temp_name("config.json")):
        planted = tmp_path / name
        planted.write_text("planted")
        os.chown(planted, NOBODY, NOBODY)
        planted.chmod(0o666)
    target = local_proxy.write_config(tmp_path, '{"jwks": []}')
    st = target.lstat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
    assert target.read_text() == '{"jwks": []}'
