"""A real compute with remote extensions, on a private copy of the PostgreSQL install tree:
the ``shared_preload_libraries`` library (Debian's pgaudit) is downloaded at start and
loaded by postgres, with the timings in ``/metrics.json``; the spec's control file makes
``prefix`` available; ``/extension_server/prefix`` (as Neon's postgres would call it)
brings its files, and then ``CREATE EXTENSION prefix`` works."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from compute_ctl.compute import node as node_mod
from compute_ctl.compute import state
from compute_ctl.compute.http import server
from tests import pgserver
from tests.core import helpers
from tests.support import remote_ext as ext_support

pytestmark = pytest.mark.postgres

PATH = "latest/amd64/v15/extensions/{}.tar.zst"
PREFIX_CONTROL = (
    "# prefix extension\ncomment = 'Prefix Range module for PostgreSQL'\n"
    "default_version = '1.2.0'\nmodule_pathname = '$libdir/prefix'\nrelocatable = true\n"
)


def _remote(public: list[str]) -> dict[str, Any]:
    return {
        "public_extensions": public,
        "custom_extensions": [],
        "library_index": {"pgaudit": "pgaudit", "prefix": "prefix"},
        "extension_data": {
            "pgaudit": {"control_data": {}, "archive_path": "pgaudit.tar.zst"},
            "prefix": {"control_data": {"prefix.control": PREFIX_CONTROL}, "archive_path": ""},
        },
    }


@contextlib.asynccontextmanager
async def _compute(
    scratch: Path, install: Path, gw: ext_support.Gateway, *, public: list[str], until: Any
) -> AsyncIterator[node_mod.ComputeNode]:
    port = pgserver.free_port()
    raw = helpers.spec_json(port=port, settings=[("shared_preload_libraries", "pgaudit", "string")])
    raw["remote_extensions"] = _remote(public)
    n = node_mod.ComputeNode(
        helpers.make_params(
            pgdata=scratch / "pgdata",
            port=port,
            pgbin=str(install),
            remote_ext_base_url=gw.base_url,
            allow_unauthenticated=True,
        ),
        config=helpers.config(raw),
    )
    async with server.serving(n, metrics=n.metrics), helpers.run_node(n, until=until):
        yield n


async def _sql(n: node_mod.ComputeNode, query: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(n.connstr(), autocommit=True) as conn:
        cur = await conn.execute(query.encode())
        return await cur.fetchall() if cur.description else []


async def test_preload_at_start_then_create_extension_after_a_route_download(
    scratch: Path, install: Path, pgaudit_archive: bytes, prefix_archive: bytes
) -> None:
    extension_dir = install.parents[5] / "usr/share/postgresql" / install.parents[1].name
    for leftover in extension_dir.glob("extension/prefix*"):
        leftover.unlink()
    async with ext_support.serving() as gw:
        gw.files[PATH.format("pgaudit")] = pgaudit_archive
        gw.files[PATH.format("prefix")] = prefix_archive
        async with (
            _compute(
                scratch,
                install,
                gw,
                public=["pgaudit", "prefix"],
                until=state.ComputeStatus.RUNNING,
            ) as n,
            aiohttp.ClientSession() as http,
        ):
            # pgaudit came at start, before postgres: postgres preloaded it.
            assert gw.requests == {PATH.format("pgaudit"): 1}
            assert await _sql(n, "SHOW shared_preload_libraries") == [("pgaudit",)]
            await _sql(n, "CREATE EXTENSION pgaudit")
            external = f"http://127.0.0.1:{n.params.external_http_port}"
            async with http.get(f"{external}/metrics.json") as response:
                timings = await response.json()
            assert timings["num_ext_downloaded"] == 1
            assert timings["largest_ext_size"] == len(pgaudit_archive)
            assert timings["total_ext_download_size"] == len(pgaudit_archive)
            assert timings["load_ext_ms"] >= 0
            async with http.get(f"{external}/metrics") as response:
                text = await response.text()
            # The preload's request, and its phase (when it took a millisecond or more).
            assert (
                'compute_ctl_remote_ext_requests_total{filename="pgaudit.tar.zst",'
                'http_status="200 OK"} 1.0' in text
            )
            if timings["load_ext_ms"] > 0:
                assert 'compute_ctl_startup_phase_seconds_count{phase="load_ext"} 1.0' in text

            # prefix: its control file came from the spec, its files not yet.
            assert await _sql(
                n, "SELECT default_version FROM pg_available_extensions WHERE name = 'prefix'"
            ) == [("1.2.0",)]
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match="no installation script"
            ):
                await _sql(n, "CREATE EXTENSION prefix")

            internal = f"http://127.0.0.1:{n.params.internal_http_port}"
            async with http.post(f"{internal}/extension_server/prefix") as response:
                assert response.status == 200
            await _sql(n, "CREATE EXTENSION prefix")
            assert await _sql(n, "SELECT '123'::prefix_range @> '123456'") == [(True,)]
            assert gw.requests[PATH.format("prefix")] == 1


async def test_a_preload_library_the_spec_does_not_allow_fails_the_start(
    scratch: Path, install: Path
) -> None:
    async with (
        ext_support.serving() as gw,
        _compute(scratch, install, gw, public=["prefix"], until=state.ComputeStatus.FAILED) as n,
    ):
        assert n.state.error == "extension pgaudit is not found"
        assert gw.requests == {}
