"""The Dockerfile's shape (no container engine here): stages, packages, user, entrypoint."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [arg for name, arg in self.instructions if name == op]


def parse(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        op, _, arg = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.IGNORECASE)
            assert match, f"bad FROM: {line}"
            stages.append(Stage(base=match[1], name=match[2]))
        elif stages:
            stages[-1].instructions.append((op, arg.strip()))
    return stages


def test_multi_stage_debian_bookworm() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG DEBIAN_RELEASE=bookworm$", text, re.MULTILINE)
    stages = parse(text)
    assert [s.name for s in stages] == ["builder", "runtime"]
    assert all(s.base == "debian:${DEBIAN_RELEASE}-slim" for s in stages)


def test_builder_installs_the_package_into_a_venv() -> None:
    builder = parse((ROOT / "Dockerfile").read_text())[0]
    runs = " ".join(builder.args("RUN"))
    assert "python3 -m venv /opt/compute-ctl" in runs
    assert '/opt/compute-ctl/bin/pip install --no-cache-dir --no-deps ".[operator]"' in runs
    assert "pip uninstall -y -q pip setuptools" in runs  # none in the runtime venv
    # Dependencies (read from pyproject.toml) are a layer before the source is copied.
    order = [op + " " + arg for op, arg in builder.instructions]
    deps = next(i for i, line in enumerate(order) if "-r /tmp/deps.txt" in line)
    code = next(i for i, line in enumerate(order) if line.startswith("COPY compute "))
    assert deps < code
    for copy in builder.args("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("compute", "operator", "compute_ctl", "pyproject.toml", "README.md"):
        assert needed not in ignored


def test_runtime_has_postgres_runs_as_postgres_and_starts_compute_ctl() -> None:
    runtime = parse((ROOT / "Dockerfile").read_text())[-1]
    runs = " ".join(runtime.args("RUN"))
    assert re.search(r"apt-get install [^&]*\bpostgresql-15\b", runs)
    assert "useradd --system --uid 999" in runs
    assert "create_main_cluster = false" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "/usr/share/doc" in runs
    assert "--from=builder /opt/compute-ctl /opt/compute-ctl" in runtime.args("COPY")
    env = " ".join(runtime.args("ENV"))
    assert "/opt/compute-ctl/bin" in env
    assert "/usr/lib/postgresql/15/bin" in env
    assert runtime.args("USER") == ["postgres"]
    assert [json.loads(e) for e in runtime.args("ENTRYPOINT")] == [["compute_ctl"]]


def test_entrypoint_and_operator_command_are_console_scripts() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    assert scripts["compute_ctl"] == "compute_ctl.compute.__main__:main"
    assert scripts["compute-ctl-operator"] == "compute_ctl.operator.__main__:main"
    assert "kopf" in " ".join(pyproject["project"]["optional-dependencies"]["operator"])
