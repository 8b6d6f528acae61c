"""``GET /status`` with no sockets: aiohttp's protocol fed in-process, bare app vs compute_ctl.

Run: ``.venv/bin/python -m bench.http_inproc`` (about 20 s). Each server's protocol object
gets the request bytes straight from this loop and writes its answer into a transport
that only signals completion, so what is measured is the servers' Python and C work per
request, without the kernel, the client or the other processes on the machine. The bare
app serves the very body compute_ctl renders; compute_ctl's internal and external apps
run over the node test double (no PostgreSQL needed for ``/status``). Prints CPU time
per request (``time.process_time``) and ratios paired round by round with the bare app.

Instructions per request, exact, with callgrind: run one server at a time with
``--only NAME --requests 0`` and ``--requests 3000`` under
``valgrind --tool=callgrind`` and divide the difference of the two totals by 3000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http import app as app_mod
from compute_ctl.compute.http import connections, responses
from tests.support import jwts, nodedouble

SERVERS = ("bare", "internal", "external")


class _Sink(asyncio.Transport):
    """A transport that drops what is written and wakes the loop waiting for an answer."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Future[None] | None = None
        self.status_line = b""  # of the last answer
        self._closing = False

    def _answer(self, head: bytes) -> None:
        self.status_line = head.split(b"\r\n", 1)[0]
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def write(self, data: Any) -> None:
        self._answer(bytes(data[:40]))

    def writelines(self, list_of_data: Any) -> None:
        self._answer(bytes(next(iter(list_of_data), b"")[:40]))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 1)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _servers(names: Sequence[str]) -> dict[str, tuple[web.RequestHandler, _Sink, bytes]]:
    node = nodedouble.offline(external_http_port=1, internal_http_port=2)
    key = jwts.ed25519()
    token = jwts.token(key, {"compute_id": node.params.compute_id})
    node.state.config = spec_mod.ComputeCtlConfig(jwks=spec_mod.Jwks(keys=[jwts.public_jwk(key)]))
    await node.start_running()
    metrics = metrics_mod.Metrics(build_tag="bench", state=node.state)
    body = responses.status_body(node.state).model_dump_json().encode()

    async def bare_status(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    bare = web.Application()
    bare.router.add_get("/status", bare_status)
    apps = {
        "bare": (bare, 1, b"", {}),
        "internal": (
            app_mod.build_app(node, metrics=metrics, external=False),
            2,
            b"",
            connections.runner_options(),
        ),
        "external": (
            app_mod.build_app(node, metrics=metrics, external=True),
            1,
            f"Authorization: Bearer {token}\r\n".encode(),
            connections.runner_options(),
        ),
    }
    servers = {}
    for name in names:
        app, port, extra, options = apps[name]
        runner = web.AppRunner(app, access_log=None, **options)
        await runner.setup()
        assert runner.server is not None
        protocol = runner.server()
        sink = _Sink()
        protocol.connection_made(sink)
        request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%b\r\n" % (port, extra)
        servers[name] = (protocol, sink, request)
    return servers


async def _serve(server: tuple[web.RequestHandler, _Sink, bytes], count: int) -> None:
    protocol, sink, request = server
    loop = asyncio.get_running_loop()
    for _ in range(count):
        sink.answered = loop.create_future()
        protocol.data_received(request)
        await sink.answered


async def run(*, names: Sequence[str], requests_total: int, rounds: int, report: bool) -> None:
    servers = await _servers(names)
    for name in names:  # warm up
        await _serve(servers[name], 2000)
        if servers[name][1].status_line != b"HTTP/1.1 200 OK":
            raise RuntimeError(f"{name}: {servers[name][1].status_line!r}")
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            started = time.process_time()
            await _serve(servers[name], requests_total)
            cpu[name].append((time.process_time() - started) / max(requests_total, 1) * 1e6)
    if not report:
        return
    print(f"== GET /status in-process, {requests_total} requests x {rounds} rounds")
    print(f"{'server':10} {'CPU us/req':>10} {'vs bare (per round: median, range)':>36}")
    for name in names:
        paired = sorted(b / c for b, c in zip(cpu["bare"], cpu[name], strict=True))
        print(
            f"{name:10} {statistics.median(cpu[name]):10.2f}"
            f"   {statistics.median(paired):.3f}x, {paired[0]:.3f}-{paired[-1]:.3f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_inproc", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="per round and server")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=SERVERS, help="one server, one round, no report")
    args = parser.parse_args(argv)
    if args.only:
        asyncio.run(run(names=[args.only], requests_total=args.requests, rounds=1, report=False))
    else:
        asyncio.run(
            run(names=SERVERS, requests_total=args.requests, rounds=args.rounds, report=True)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
