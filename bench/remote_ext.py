"""Benchmark: a remote extension's download and unpack against ``curl | tar --zstd -x``.

Builds one ``.tar.zst`` of PostgreSQL's own ``lib`` directory (shared libraries and
bitcode: about 1,200 members, 32 MB of tar), serves it from the tests' loopback gateway,
then alternately downloads it through ``remote_ext.server.ExtensionServer`` into a
private copy of the install tree (the route's whole path: GET, streaming zstd and untar
with the safety filters, the moves into ``pkglibdir``) and with ``curl -s URL | tar
--zstd -x`` into an empty directory. Prints the medians and their ratio.

    .venv/bin/python -m bench.remote_ext [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import tarfile
import time

import zstandard

from compute_ctl.compute import metrics, pgtools, state
from compute_ctl.compute.remote_ext import server
from tests import pgserver
from tests.support import remote_ext as ext_support

_PATH = "latest/amd64/v15/extensions/big.tar.zst"


def _archive() -> tuple[bytes, int]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(ext_support.pg_root() / "lib", arcname="lib")
    return zstandard.ZstdCompressor(level=3).compress(buffer.getvalue()), len(buffer.getvalue())


async def main(rounds: int) -> None:
    data, raw = _archive()
    print(f"archive: {raw / 1e6:.1f} MB tar, {len(data) / 1e6:.1f} MB .tar.zst")
    with pgserver.scratch("bench-remote-ext-") as base:
        install = ext_support.private_install(base)
        tools = pgtools.PgTools(postgres=install, user=pgserver.tools().user)
        ours: list[float] = []
        reference: list[float] = []
        async with ext_support.serving() as gw:
            gw.files[_PATH] = data
            for _ in range(rounds):
                extensions = server.ExtensionServer(
                    base_url=gw.base_url,
                    build_tag="latest",
                    tools=tools,
                    metrics=metrics.Metrics(build_tag="bench", state=state.ComputeState()),
                )
                await extensions.layout()  # pg_config once, as a running compute has
                started = time.perf_counter()
                await extensions.download("big")
                ours.append(time.perf_counter() - started)
                dest = base / "reference"  # beside usr/, the install's root
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                started = time.perf_counter()
                proc = await asyncio.create_subprocess_shell(
                    f"curl -sf {gw.base_url}{_PATH} | tar --zstd -x -C {dest}"
                )
                assert await proc.wait() == 0
                reference.append(time.perf_counter() - started)
    ms = sorted(round(x * 1000) for x in ours)
    ref_ms = sorted(round(x * 1000) for x in reference)
    print(f"ExtensionServer.download: median {statistics.median(ours) * 1000:.0f} ms {ms}")
    print(f"curl | tar --zstd -x:     median {statistics.median(reference) * 1000:.0f} ms {ref_ms}")
    print(f"ratio {statistics.median(ours) / statistics.median(reference):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
