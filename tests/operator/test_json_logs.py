"""``--log-format json``: one JSON object per line, with ``compute_id`` and, for HTTP, the
request id, from compute_ctl and from the operator (issue 13)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import processes
from tests.operator import procs


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_compute_ctl_logs_json_with_the_request_id() -> None:
    compute = processes.Compute(compute_id="json-logs")
    try:
        compute.start("--log-format=json")
        deadline = time.monotonic() + 60
        while compute.try_status() is None:
            assert compute.running(), compute.log_tail()
            assert time.monotonic() < deadline, compute.log_tail()
            time.sleep(0.05)
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{compute.url}/configure",
            data=b"{not json",
            headers={"x-request-id": "req-42", **compute.auth()},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError, match="HTTP Error 4"):
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
    finally:
        compute.stop()
    lines = _lines(compute.log_path)  # every line parses: one object per line
    assert lines
    assert {line["compute_id"] for line in lines} == {"json-logs"}
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    mine = [line for line in lines if line.get("request_id") == "req-42"]
    assert mine, lines[-5:]
    assert "/configure" in mine[0]["msg"]
    shutil.rmtree(compute.workdir, ignore_errors=True)


def test_the_operator_logs_json(tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    argv = procs.python_module(
        "compute_ctl.operator",
        "--name=c1",
        "--namespace=ns1",
        "--compute-id=c1-0",
        "--log-format=json",
        "--server=http://127.0.0.1:9",  # nothing there: it logs and retries
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=procs.python_env())
    try:
        deadline = time.monotonic() + 30
        while "managing" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    lines = _lines(log)
    assert lines[0]["compute_id"] == "c1-0"
    assert "managing ns1/c1" in lines[0]["msg"]
