"""``scripts/demo`` (issue 12, item 24): its unauthenticated external API listens on
loopback only, as its banner says, never on every address."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests import pgserver, support

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _two_free_ports() -> int:
    """A free port whose predecessor is free too (the demo's external port is port - 1)."""
    for _ in range(50):
        port = pgserver.free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port - 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_demo_binds_its_external_api_to_loopback() -> None:
    base = pgserver.scratch_dir("demo-")
    try:
        spec = json.loads((support.REPO / "examples" / "config.json").read_text())
        pg_port = pgserver.free_port()
        for setting in spec["spec"]["cluster"]["settings"]:
            if setting["name"] == "port":
                setting["value"] = str(pg_port)
        config = base / "config.json"
        config.write_text(json.dumps(spec))
        http_port = _two_free_ports()
        external = http_port - 1
        env = {
            **os.environ,
            "COMPUTE_CTL_DEMO_DIR": str(base / "demo"),
            "COMPUTE_CTL_DEMO_HTTP_PORT": str(http_port),
            "COMPUTE_CTL_DEMO_CONFIG": str(config),
        }
        with open(base / "demo.log", "wb") as log:
            proc = subprocess.Popen(
                [str(support.REPO / "scripts" / "demo")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=pgserver.die_with_parent(),
            )
        try:
            deadline = time.monotonic() + 60
            while not _listening_addresses(external):
                assert proc.poll() is None, (base / "demo.log").read_text()
                assert time.monotonic() < deadline, (base / "demo.log").read_text()
                time.sleep(0.1)
            assert _listening_addresses(external) == {"127.0.0.1"}
            banner = (base / "demo.log").read_text()
            assert f"127.0.0.1:{external}" in banner
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)
