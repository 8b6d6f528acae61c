"""The operator's flags and environment."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

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


def test_secret_interval_defaults_to_ten_seconds() -> None:
    base = ["--name", "c", "-n", "ns"]
    assert config.parse(base, {}).secret_interval == 10.0
    assert config.parse([*base, "--secret-interval", "2"], {}).secret_interval == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "ns"], "name is required"),
        (["--name", "c", "-n", "ns", "--resync-interval", "0"], "must be positive"),
        (["--name", "c", "-n", "ns", "--secret-interval", "-1"], "must be positive"),
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


def test_the_kopf_floor_has_what_the_operator_uses() -> None:
    """``settings.watching.field_selectors`` came with kopf 1.45.0; the floor says so."""
    import kopf

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    pins = [d for group in extras.values() for d in group if d.startswith("kopf")]
    assert pins
    assert {pin.split(",")[0] for pin in pins} == {"kopf>=1.45"}
    assert hasattr(kopf.OperatorSettings().watching, "field_selectors")
