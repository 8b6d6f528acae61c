"""The command line: Neon's flags, and every bad invocation refused before anything is
touched (exit 2, one clear message naming the flaw; a pre-existing PGDATA survives)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from compute_ctl.compute import cli, controlplane, errors
from tests import invalid_specs, pgserver
from tests.core import helpers

GOOD_PORT = 55999


@pytest.fixture
def pgdata(scratch: Path) -> Iterator[Path]:
    """A PGDATA-looking directory with a marker file that must survive every refusal."""
    path = scratch / "pgdata"
    (path / "global").mkdir(parents=True)
    (path / "PG_VERSION").write_text("15\n")
    (path / "global" / "pg_control").write_bytes(b"\0" * 16)
    (path / "marker.txt").write_text("keep me")
    yield path
    assert not path.with_name("pgdata.warmup").exists()  # a speculative initdb is undone
    assert (path / "marker.txt").read_text() == "keep me"
    assert sorted(p.name for p in path.iterdir()) == ["PG_VERSION", "global", "marker.txt"]


def _config(scratch: Path, raw: Any, name: str = "config.json") -> Path:
    path = scratch / name
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


def _argv(pgdata: Path, config: Path, *extra: str, port: int = GOOD_PORT) -> list[str]:
    return [
        "-D",
        str(pgdata),
        "-C",
        f"postgresql://cloud_admin@127.0.0.1:{port}/postgres",
        "-i",
        "compute-1",
        "-c",
        str(config),
        "--internal-http-port",
        str(pgserver.free_port()),
        "--external-http-port",
        str(pgserver.free_port()),
        *extra,
    ]


def _good() -> dict[str, Any]:
    return {"spec": helpers.spec_json(port=GOOD_PORT)}


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> str:
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        assert cli.main(argv) == cli.EXIT_USAGE
    finally:
        os.environ.clear()
        os.environ.update(old)
    err = capsys.readouterr().err
    assert err.startswith("compute_ctl: error: ")
    assert err.count("\n") == 1  # one clear line, no traceback
    return err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["spec"].pop("cluster"), "spec.cluster: Field required"),
        (
            lambda c: c["spec"]["cluster"]["roles"].append({}),
            "spec.cluster.roles.1.name: Field required",
        ),
        (lambda c: c["spec"].update(tenant_id="nothex"), "spec.tenant_id"),
        (lambda c: c["spec"].update(mode="Sideways"), "spec.mode"),
        (
            lambda c: c["spec"]["cluster"]["settings"][0].update(value="5555"),
            "port 5555 disagrees with -C/--connstr port 55999",
        ),
        (
            lambda c: c["spec"]["cluster"]["settings"].append(
                {"name": "bad name", "value": "1", "vartype": "integer"}
            ),
            "spec.cluster.settings.5: invalid setting name",
        ),
        (
            lambda c: c["spec"].update(
                safekeeper_connstrings=["sk:1", "sk:1"],
                tenant_id="a" * 32,
                timeline_id="b" * 32,
                pageserver_connstring="postgresql://ps",
            ),
            "duplicate entry in safekeeper_connstrings",
        ),
    ],
)
def test_invalid_spec_is_refused_naming_the_field(
    scratch: Path, pgdata: Path, capsys: pytest.CaptureFixture[str], mutate: Any, message: str
) -> None:
    config = _good()
    mutate(config)
    assert message in _refused(_argv(pgdata, _config(scratch, config)), capsys)


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and mtime (ns)."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("family", invalid_specs.FAMILIES, ids=lambda f: f.id)
def test_semantically_invalid_spec_exits_2_with_pgdata_untouched(
    scratch: Path,
    pgdata: Path,
    capsys: pytest.CaptureFixture[str],
    family: invalid_specs.Family,
) -> None:
    """Before admission, several of these passed the CLI's checks: PGDATA was wiped and
    initdb'ed, and only the catalog apply refused the spec."""
    before = _tree(pgdata)
    config = {"spec": invalid_specs.invalid(helpers.spec_json(port=GOOD_PORT), family)}
    err = _refused(_argv(pgdata, _config(scratch, config)), capsys)
    assert family.needle in err
    assert _tree(pgdata) == before


def test_unreadable_and_malformed_config_files(
    scratch: Path, pgdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(_argv(pgdata, scratch / "missing.json"), capsys)
    assert "cannot read config file" in err
    err = _refused(_argv(pgdata, _config(scratch, "{not json")), capsys)
    assert "is not valid JSON" in err
    err = _refused(_argv(pgdata, _config(scratch, "[1, 2]")), capsys)
    assert "config file" in err


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--privileged-role-name", "Bad-Name"], {}, "--privileged-role-name"),
        (["-b", "/nonexistent/postgres"], {}, "postgres binary '/nonexistent/postgres' not found"),
        (["--os-user", "no-such-user-xyz"], {}, "'no-such-user-xyz' does not exist"),
        (["--resync-interval", "0"], {}, "--resync-interval"),
        (["-r", "https://ext.example/base?x=1"], {}, "--remote-ext-base-url"),
        ([], {"FAILPOINTS": "before-apply=explode"}, "FAILPOINTS"),
        ([], {"AUTOSCALING": "1"}, "AUTOSCALING"),
    ],
)
def test_bad_flags_and_environment(
    scratch: Path,
    pgdata: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    argv = _argv(pgdata, _config(scratch, _good()), *extra)
    if extra == [] and "AUTOSCALING" in env:
        argv += ["--cgroup-root", str(scratch / "no-cgroups")]
    assert message in _refused(argv, capsys, env)


def test_connstr_must_name_a_superuser(
    scratch: Path, pgdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(pgdata, _config(scratch, _good()))
    argv[argv.index("-C") + 1] = "postgresql://127.0.0.1:55999/postgres"
    assert "must name the superuser" in _refused(argv, capsys)


def test_flag_conflicts_are_usage_errors(
    scratch: Path, pgdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(scratch, _good())
    with pytest.raises(SystemExit) as caught:
        cli.main([*_argv(pgdata, config), "-p", "http://127.0.0.1:1"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    argv = _argv(pgdata, config)
    del argv[argv.index("-c") : argv.index("-c") + 2]
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert (
        "one of the arguments -c/--config -p/--control-plane-uri is required"
        in capsys.readouterr().err
    )


def test_foreign_directory_is_never_wiped(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = scratch / "not-a-pgdata"
    home.mkdir()
    (home / "precious.txt").write_text("mine")
    err = _refused(_argv(home, _config(scratch, _good())), capsys)
    assert "refusing to wipe" in err
    assert (home / "precious.txt").read_text() == "mine"


def test_untraversable_parent_is_refused(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run postgres as another user")
    private = scratch / "private"
    private.mkdir(mode=0o700)
    os.chown(private, 0, 0)
    err = _refused(_argv(private / "pgdata", _config(scratch, _good())), capsys)
    assert "cannot traverse" in err
    assert not (private / "pgdata").exists()


@pytest.mark.parametrize("raw", ["{not json", json.dumps({"spec": {"format_version": 1.0}})])
def test_process_exits_2_before_touching_pgdata(scratch: Path, pgdata: Path, raw: str) -> None:
    from tests.support import compute_process as process

    result = subprocess.run(
        [*process.compute_ctl_argv(), *_argv(pgdata, _config(scratch, raw))],
        capture_output=True,
        text=True,
        cwd=helpers.REPO,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("compute_ctl: error: config file")


# --- -p: the control plane ------------------------------------------------------


async def _control_plane(replies: list[tuple[int, Any]], seen: list[web.Request]) -> web.AppRunner:
    async def spec(request: web.Request) -> web.Response:
        seen.append(request)
        status, body = replies.pop(0) if len(replies) > 1 else replies[0]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/compute/api/v2/computes/{id}/spec", spec)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


async def _fetch(replies: list[tuple[int, Any]]) -> tuple[Any, list[web.Request]]:
    seen: list[web.Request] = []
    runner = await _control_plane(replies, seen)
    port = pgserver.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result: Any = await controlplane.fetch_config(
            uri=f"http://127.0.0.1:{port}/", compute_id="compute/1", token="tok-123"
        )
    except errors.ConfigError as e:
        result = e
    finally:
        await runner.cleanup()
    return result, seen


async def test_control_plane_retries_then_succeeds() -> None:
    attached = {"status": "attached", **_good(), "compute_ctl_config": {"jwks": {"keys": []}}}
    result, seen = await _fetch([(503, "{}"), (200, "{bad json"), (200, attached)])
    assert result.spec is not None
    assert result.spec.port() == GOOD_PORT
    assert len(seen) == 3
    assert all(r.headers["Authorization"] == "Bearer tok-123" for r in seen)
    assert seen[0].raw_path == "/compute/api/v2/computes/compute%2F1/spec"


async def test_control_plane_empty_means_wait_for_a_spec() -> None:
    result, seen = await _fetch([(200, {"status": "empty", "spec": None})])
    assert result.spec is None
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("replies", "message", "attempts"),
    [
        ([(503, "{}")], "after 3 attempts: HTTP 503", 3),
        ([(200, {"status": "attached", "spec": None})], "attached but there is no spec", 1),
        ([(404, {"error": "no such compute"})], "HTTP 404", 1),
        ([(200, {"status": "attached", "spec": {"cluster": {}}})], "spec.format_version", 1),
    ],
)
async def test_control_plane_failures(
    replies: list[tuple[int, Any]], message: str, attempts: int
) -> None:
    result, seen = await _fetch(replies)
    assert isinstance(result, errors.ConfigError)
    assert message in str(result)
    assert "tok-123" not in str(result)
    assert len(seen) == attempts


async def test_control_plane_spec_is_admitted_before_pgdata_is_touched(
    scratch: Path, pgdata: Path
) -> None:
    """``-p``: the fetched spec goes through the same admission as a config file."""
    import asyncio

    from tests.support import compute_process as process

    family = next(f for f in invalid_specs.FAMILIES if f.id == "owner-not-a-role")
    spec = invalid_specs.invalid(helpers.spec_json(port=GOOD_PORT), family)
    seen: list[web.Request] = []
    runner = await _control_plane([(200, {"status": "attached", "spec": spec})], seen)
    port = pgserver.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    before = _tree(pgdata)
    argv = _argv(pgdata, scratch / "unused.json")
    argv[argv.index("-c") : argv.index("-c") + 2] = ["-p", f"http://127.0.0.1:{port}"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *process.compute_ctl_argv(),
            *argv,
            stderr=asyncio.subprocess.PIPE,
            cwd=helpers.REPO,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 2, stderr
    assert stderr.decode().startswith("compute_ctl: error: control plane reply: spec: ")
    assert family.needle in stderr.decode()
    assert len(seen) == 1
    assert _tree(pgdata) == before
