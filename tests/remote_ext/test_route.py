"""``POST /extension_server/{filename}`` on the internal port: Neon's status matrix, the
download into PostgreSQL's directories (a private copy of the install tree), the
``compute_ctl_remote_ext_requests_total`` labels, and single-flight downloads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import parser

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import pgtools
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.http import server
from compute_ctl.compute.remote_ext import server as remote_ext
from tests import pgserver
from tests.core import helpers
from tests.support import nodedouble, specs
from tests.support import remote_ext as ext_support

pytestmark = pytest.mark.postgres  # pg_config of the private install tree

PREFIX_PATH = "latest/amd64/v15/extensions/prefix.tar.zst"
REMOTE = {
    "public_extensions": ["prefix"],
    "custom_extensions": None,
    "library_index": {"prefix": "prefix"},
    "extension_data": {
        "prefix": {"control_data": {"prefix.control": "unused here"}, "archive_path": "x"}
    },
}


@dataclasses.dataclass
class Served:
    node: nodedouble.NodeDouble
    session: aiohttp.ClientSession
    install: Path

    async def post(self, filename: str, query: str = "") -> tuple[int, Any]:
        port = self.node.params.internal_http_port
        url = f"http://127.0.0.1:{port}/extension_server/{filename}{query}"
        async with self.session.post(url) as response:
            body = await response.json() if response.content_type == "application/json" else None
            if body is None:
                assert await response.read() == b""
            return response.status, body

    async def set_spec(self, remote: dict[str, Any] | None = REMOTE) -> None:
        raw = specs.local_spec(port=5432)
        raw["remote_extensions"] = remote
        async with self.node.state.lock() as s:
            s.set_desired(spec_mod.ComputeSpec.model_validate(raw))

    async def requests(self) -> dict[tuple[str, str], float]:
        """``compute_ctl_remote_ext_requests_total`` by (http_status, filename)."""
        url = f"http://127.0.0.1:{self.node.params.external_http_port}/metrics"
        async with self.session.get(url) as response:
            text = await response.text()
        found = {}
        for family in parser.text_string_to_metric_families(text):
            if family.name == "compute_ctl_remote_ext_requests":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = (sample.labels["http_status"], sample.labels["filename"])
                        found[key] = sample.value
        return found

    @property
    def extension_dir(self) -> Path:
        return self.install.parents[5] / "usr/share/postgresql" / self.install.parents[1].name


@contextlib.asynccontextmanager
async def _served(install: Path, *, base_url: str | None) -> AsyncIterator[Served]:
    node = nodedouble.offline(
        external_http_port=pgserver.free_port(),
        internal_http_port=pgserver.free_port(),
        allow_unauthenticated=True,
        internal_full_api=False,
    )
    metrics = metrics_mod.Metrics(build_tag="latest", state=node.state)
    node.extension_server = remote_ext.ExtensionServer(
        base_url=base_url,
        build_tag="latest",
        tools=pgtools.PgTools(postgres=install, user=pgserver.tools().user),
        metrics=metrics,
    )
    async with server.serving(node, metrics=metrics), aiohttp.ClientSession() as session:
        yield Served(node=node, session=session, install=install)


@pytest.fixture
async def gw(prefix_archive: bytes) -> AsyncIterator[ext_support.Gateway]:
    async with ext_support.serving() as g:
        g.files[PREFIX_PATH] = prefix_archive
        yield g


async def test_no_base_url_is_412(install: Path) -> None:
    async with _served(install, base_url=None) as api:
        await api.set_spec()
        assert await api.post("prefix") == (412, {"error": "remote storage is not configured"})


async def test_no_remote_extensions_is_409_also_before_any_spec(install: Path) -> None:
    unavailable = (409, {"error": "information about remote extensions is unavailable"})
    async with _served(install, base_url="http://127.0.0.1:1/") as api:
        assert await api.post("prefix") == unavailable  # Neon's handler panics here
        await api.set_spec(remote=None)
        assert await api.post("prefix") == unavailable


@pytest.mark.parametrize(
    ("filename", "query", "status", "message"),
    [
        ("nope", "", 404, "extension nope is not found"),
        ("nope.so", "?is_library=true", 404, "library nope is not found"),
        ("prefix", "?is_library=yes", 400, "is_library must be true or false, not 'yes'"),
    ],
)
async def test_refusals(
    install: Path, filename: str, query: str, status: int, message: str
) -> None:
    async with _served(install, base_url="http://127.0.0.1:1/") as api:
        await api.set_spec()
        assert await api.post(filename, query) == (status, {"error": message})
        assert await api.requests() == {}  # nothing was asked of the gateway


async def test_only_post_and_only_on_the_internal_port(install: Path) -> None:
    async with _served(install, base_url="http://127.0.0.1:1/") as api:
        internal = f"http://127.0.0.1:{api.node.params.internal_http_port}"
        async with api.session.get(f"{internal}/extension_server/prefix") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
        external = f"http://127.0.0.1:{api.node.params.external_http_port}"
        async with api.session.post(f"{external}/extension_server/prefix") as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("upstream", "label"),
    [(503, "503 Service Unavailable"), (404, "404 Not Found"), (None, "unknown")],
    ids=["503", "404", "unreachable"],
)
async def test_upstream_failures_are_500_and_counted(
    install: Path, gw: ext_support.Gateway, upstream: int | None, label: str
) -> None:
    base_url = gw.base_url
    if upstream is None:
        base_url = f"http://127.0.0.1:{pgserver.free_port()}/ext/"  # nobody listens
    else:
        gw.statuses[PREFIX_PATH] = upstream
    async with _served(install, base_url=base_url) as api:
        await api.set_spec()
        status, body = await api.post("prefix")
        assert status == 500
        assert body["error"].startswith("failed to download prefix.tar.zst: ")
        assert await api.requests() == {(label, "prefix.tar.zst"): 1.0}
        # A failed download is not remembered: the next request tries again.
        gw.statuses.clear()
        if upstream is not None:
            assert await api.post("prefix") == (200, None)


async def test_a_download_lands_in_the_postgres_directories(
    install: Path, gw: ext_support.Gateway
) -> None:
    lib = install.parent.parent / "lib"
    async with _served(install, base_url=gw.base_url) as api:
        await api.set_spec()
        for path in (api.extension_dir / "extension" / "prefix.control", lib / "prefix.so"):
            path.unlink(missing_ok=True)  # from an earlier test of this module
        assert await api.post("prefix.so", "?is_library=true") == (200, None)
        assert gw.requests == {PREFIX_PATH: 1}
        assert (lib / "prefix.so").is_file()
        assert (api.extension_dir / "extension" / "prefix.control").is_file()
        assert (api.extension_dir / "extension" / "prefix--1.2.0.sql").is_file()
        assert (lib / "bitcode" / "prefix" / "prefix.bc").is_file()  # merged into bitcode/
        assert list((install.parent.parent / "download_extensions").iterdir()) == []
        # Downloaded once: later requests (as an extension or a library) return at once.
        assert await api.post("prefix") == (200, None)
        assert gw.requests == {PREFIX_PATH: 1}
        assert await api.requests() == {("200 OK", "prefix.tar.zst"): 1.0}


async def test_concurrent_requests_share_one_download(
    install: Path, gw: ext_support.Gateway
) -> None:
    gw.hold = asyncio.Event()
    async with _served(install, base_url=gw.base_url) as api:
        await api.set_spec()
        posts = [asyncio.create_task(api.post("prefix")) for _ in range(3)]
        await helpers.wait_until(lambda: gw.requests[PREFIX_PATH] == 1, what="the download")
        assert not any(p.done() for p in posts)
        gw.hold.set()
        assert await asyncio.gather(*posts) == [(200, None)] * 3
        assert gw.requests == {PREFIX_PATH: 1}


async def test_a_corrupt_archive_is_500(install: Path, gw: ext_support.Gateway) -> None:
    gw.files[PREFIX_PATH] = ext_support.raw_archive([])[:10]
    async with _served(install, base_url=gw.base_url) as api:
        await api.set_spec()
        status, body = await api.post("prefix")
        assert status == 500
        assert body["error"].startswith("cannot unpack prefix.tar.zst: ")
        assert await api.requests() == {("200 OK", "prefix.tar.zst"): 1.0}


async def test_the_gateway_password_never_reaches_an_error(
    install: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base_url = f"http://ext:hunter2@127.0.0.1:{pgserver.free_port()}/ext/"  # nobody listens
    async with _served(install, base_url=base_url) as api:
        await api.set_spec()
        status, body = await api.post("prefix")
        assert status == 500
        assert "hunter2" not in body["error"]
    assert "hunter2" not in caplog.text


async def test_without_a_base_url_the_start_writes_control_files_only(
    install: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extension_dir = install.parents[5] / "usr/share/postgresql" / install.parents[1].name
    control = extension_dir / "extension" / "fresh.control"
    kept = extension_dir / "extension" / "kept.control"
    control.unlink(missing_ok=True)
    kept.write_text("local\n")
    raw = specs.local_spec(port=5432)
    raw["cluster"]["settings"].append(
        {"name": "shared_preload_libraries", "value": "fresh", "vartype": "string"}
    )
    raw["remote_extensions"] = {
        "public_extensions": None,  # Neon's quirk: null writes every control file
        "custom_extensions": ["other"],
        "library_index": {"fresh": "fresh"},
        "extension_data": {
            "fresh": {"control_data": {"fresh.control": "from the spec\n"}, "archive_path": ""},
            "kept": {"control_data": {"kept.control": "from the spec\n"}, "archive_path": ""},
        },
    }
    server_ = remote_ext.ExtensionServer(
        base_url=None,
        build_tag="latest",
        tools=pgtools.PgTools(postgres=install, user=pgserver.tools().user),
        metrics=metrics_mod.Metrics(build_tag="latest", state=state_mod.ComputeState()),
    )
    timings = state_mod.Timings()
    try:
        async with server_.preloading(spec_mod.ComputeSpec.model_validate(raw), timings=timings):
            pass
        assert control.read_text() == "from the spec\n"
        assert kept.read_text() == "local\n"
        assert "kept.control exists; keeping the local one" in caplog.text
        assert timings == state_mod.Timings()  # nothing downloaded, all 0 (Neon)
    finally:
        control.unlink(missing_ok=True)
        kept.unlink(missing_ok=True)


async def test_close_cancels_a_download_in_flight(install: Path, gw: ext_support.Gateway) -> None:
    gw.hold = asyncio.Event()  # the gateway never answers until released
    async with _served(install, base_url=gw.base_url) as api:
        await api.set_spec()
        post = asyncio.create_task(api.post("prefix"))
        await helpers.wait_until(lambda: gw.requests[PREFIX_PATH] == 1, what="the download")
        await api.node.extension_server.close()  # what the node does when it ends
        assert await post == (500, {"error": "the download of prefix.tar.zst was cancelled"})
        staging = install.parent.parent / "download_extensions"
        assert not staging.exists() or list(staging.iterdir()) == []
