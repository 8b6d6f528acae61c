"""The operator's flags and environment."""

from __future__ import annotations

import subprocess

import pytest

from compute_ctl.operator import config
from tests.operator import procs


def test_environment_supplies_name_namespace_and_url() -> None:
    env = {
        "COMPUTE_SPEC_NAME": "c1",
        "POD_NAMESPACE": "ns1",
        "COMPUTE_CTL_URL": "http://127.0.0.1:4000",
    }
    cfg = config.parse([], env)
    assert (cfg.name, cfg.namespace, cfg.compute_url) == ("c1", "ns1", "http://127.0.0.1:4000")
    assert cfg.server is None


def test_flags_win_over_environment() -> None:
    cfg = config.parse(
        ["--name", "c2", "-n", "ns2", "--resync-interval", "2", "--server", "http://x"],
        {"COMPUTE_SPEC_NAME": "c1", "POD_NAMESPACE": "ns1"},
    )
    assert (cfg.name, cfg.namespace, cfg.resync_interval, cfg.server) == (
        "c2",
        "ns2",
        2,
        "http://x",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "ns"], "name is required"),
        (["--name", "c", "-n", "ns", "--resync-interval", "0"], "must be positive"),
    ],
)
def test_bad_configuration_is_a_clear_error(argv: list[str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse(argv, {})


def test_cli_exits_non_zero_with_a_message() -> None:
    proc = subprocess.run(
        procs.python_module("compute_ctl.operator", "--namespace", "ns"),
        capture_output=True,
        text=True,
        env=procs.python_env({"COMPUTE_SPEC_NAME": ""}),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "name is required" in proc.stderr
