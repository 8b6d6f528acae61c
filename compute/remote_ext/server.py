"""Downloads of remote extensions: the route's work and the start-time preload.

``ExtensionServer`` is Neon's ``download_extension`` plus ``prepare_preload_libraries``:

- ``request(spec, filename, is_library=...)`` answers ``/extension_server/{filename}``;
  it raises ``NotConfigured`` (no ``-r``: 412), ``SpecUnavailable`` (no
  ``spec.remote_extensions``: 409), ``names.NotFound`` (404) or ``DownloadFailed`` (500);
- ``preloading(spec, timings)`` runs the start step beside PGDATA's preparation: the
  control files from the spec, then the remote libraries of ``shared_preload_libraries``
  downloaded concurrently, and the ``load_ext_ms``, ``num_ext_downloaded``,
  ``largest_ext_size`` and ``total_ext_download_size`` timings.

A download is ``GET <base>/<build_tag>/<arch>/<vNN>/extensions/<ext>.tar.zst``, streamed
through a bounded pipe into ``unpack`` in a thread (never held in memory), and counted in
``compute_ctl_remote_ext_requests_total{http_status,filename}`` once per request. Downloads
are single-flight per archive: concurrent requests for one archive share one download and
its outcome; once it succeeded, later requests return at once (0 bytes), as Neon's progress
map does; a failed one is retried by the next request. ``close()`` (the node, when the
compute ends) cancels the downloads in flight. The directories come from
``pg_config`` beside the postgres binary, as Neon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import platform
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

from compute_ctl.compute import controlplane, errors, metrics, pgtools, safefs, state
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.remote_ext import names

if TYPE_CHECKING:
    import aiohttp

    from compute_ctl.compute.remote_ext import unpack

__all__ = ["DownloadFailed", "ExtensionServer", "Layout", "NotConfigured", "SpecUnavailable"]

logger = logging.getLogger(__name__)

# Postgres' own request to the route gives up after 60 s (neon.extension_server_*_timeout);
# the download is bounded here too, so a stalled gateway never holds a start forever.
CONNECT_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 60.0
TOTAL_TIMEOUT_S = 600.0
_CHUNK = 256 * 1024
_ROOT = pgtools.OsUser(name="root", uid=None, gid=None, home="/")  # "as ourselves"


class NotConfigured(errors.ComputeError):
    """No ``--remote-ext-base-url``."""


class SpecUnavailable(errors.ComputeError):
    """No spec, or a spec without ``remote_extensions``."""


class DownloadFailed(errors.ComputeError):
    """The gateway failed, or the archive could not be unpacked."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """What ``pg_config`` says: the ``vNN`` of the download path and where files go."""

    pg_version: str
    targets: unpack.Targets


class ExtensionServer:
    """The remote extensions of one compute (one per node)."""

    def __init__(
        self,
        *,
        base_url: str | None,
        build_tag: str,
        tools: pgtools.PgTools,
        metrics: metrics.Metrics,
    ) -> None:
        self.base_url = base_url
        self._build_tag = build_tag
        self._arch = names.arch_tag(platform.machine())
        self._tools = tools
        self._metrics = metrics
        self._layout: Layout | None = None
        self._done: set[str] = set()
        self._inflight: dict[str, asyncio.Task[int]] = {}

    # --- the route -------------------------------------------------------------------

    async def request(
        self, spec: spec_mod.ComputeSpec | None, filename: str, *, is_library: bool
    ) -> int:
        """Download what provides ``filename``; the archive's size (0 if already there)."""
        if self.base_url is None:
            raise NotConfigured("remote storage is not configured")
        if spec is None or spec.remote_extensions is None:
            raise SpecUnavailable("information about remote extensions is unavailable")
        remote = _parse(spec)
        ext = names.resolve(remote, filename, is_library=is_library)
        return await self.download(ext)

    async def download(self, ext: str) -> int:
        """Single-flight download of ``ext``'s archive (module docstring)."""
        archive = names.archive_name(ext)
        if archive in self._done:
            return 0
        task = self._inflight.get(archive)
        joined = task is not None
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(ext))
            self._inflight[archive] = task
            task.add_done_callback(lambda _t: self._inflight.pop(archive, None))
        # A request that goes away (postgres' timeout) must not cancel the download.
        try:
            size = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise DownloadFailed(f"the download of {archive} was cancelled") from None
            raise
        self._done.add(archive)
        return 0 if joined else size

    async def close(self) -> None:
        """Cancel the downloads in flight (the compute is ending); their requests get 500."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, ext: str) -> int:
        import aiohttp  # only a compute with remote extensions pays for the client

        assert self.base_url is not None
        layout = await self.layout()
        archive = names.archive_name(ext)
        url = self.base_url + names.remote_path(
            build_tag=self._build_tag, arch=self._arch, pg_version=layout.pg_version, ext=ext
        )
        timeout = aiohttp.ClientTimeout(
            total=TOTAL_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
        )
        started, recorded = time.monotonic(), False
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                recorded = True
                self._record(controlplane.status_text(response.status), archive)
                if response.status != 200:
                    raise DownloadFailed(
                        f"failed to download {archive}: {controlplane.status_text(response.status)}"
                    )
                size = await self._stream_unpack(response.content, archive=archive, layout=layout)
        except (aiohttp.ClientError, TimeoutError) as e:
            if not recorded:
                self._record("unknown", archive)
            detail = self._redacted(f"{type(e).__name__}: {e}")
            raise DownloadFailed(f"failed to download {archive}: {detail}") from e
        logger.info(
            "downloaded and unpacked %s (%d bytes) in %d ms",
            archive,
            size,
            state.monotonic_ms(started),
        )
        return size

    async def _stream_unpack(
        self, content: aiohttp.StreamReader, *, archive: str, layout: Layout
    ) -> int:
        """Feed the body to ``unpack`` in a thread as it arrives; the compressed size.
        ``unpack`` (tarfile, and the storage package for its pipe) is imported here: a
        compute that downloads no extension never loads it."""
        from compute_ctl.compute.remote_ext import unpack
        from compute_ctl.compute.storage import extract

        pipe = extract.ChunkPipe(loop=asyncio.get_running_loop(), max_chunks=16)

        def work() -> list[str]:
            try:
                return unpack.unpack(extract.PipeReader(pipe), targets=layout.targets, what=archive)
            finally:
                pipe.reader_done()

        worker = asyncio.ensure_future(asyncio.to_thread(work))
        total, open_, pending = 0, True, bytearray()

        async def hand_over() -> None:
            nonlocal open_
            if open_ and pending:
                try:
                    await pipe.put(bytes(pending))
                except extract.PipeClosed:
                    open_ = False  # the tar ended (or failed): count the rest only
            pending.clear()

        try:
            # The body arrives in pieces as small as the sender's writes; the thread is
            # handed 256 KiB at a time, so the hand-over costs little per byte.
            async for chunk in content.iter_any():
                total += len(chunk)
                pending += chunk
                if len(pending) >= _CHUNK:
                    await hand_over()
            await hand_over()
        except BaseException as e:
            pipe.abort(e if isinstance(e, Exception) else None)
            with contextlib.suppress(BaseException):
                await asyncio.shield(worker)
            raise
        pipe.close()
        try:
            placed = await worker
        except (unpack.UnpackError, extract.PipeClosed) as e:
            raise DownloadFailed(f"cannot unpack {archive}: {e}") from e
        logger.debug("%s placed: %s", archive, ", ".join(placed))
        return total

    def _redacted(self, text: str) -> str:
        """``text`` without the base URL's userinfo (aiohttp's errors may print the URL):
        ``userinfo@`` (a token may be the user name) and the password, as written and
        percent-decoded."""
        parsed = urllib.parse.urlsplit(self.base_url or "")
        userinfo = parsed.netloc.rpartition("@")[0]
        if not userinfo:
            return text
        for form in sorted({userinfo, urllib.parse.unquote(userinfo)}, key=len, reverse=True):
            text = text.replace(f"{form}@", "***@")
        password = parsed.password or ""
        for form in sorted({password, urllib.parse.unquote(password)} - {""}):
            text = text.replace(form, "***")
        return text

    def _record(self, http_status: str, archive: str) -> None:
        self._metrics.remote_ext_request(http_status=http_status, filename=archive)

    async def layout(self) -> Layout:
        """PostgreSQL's version and directories, from ``pg_config`` beside postgres (once)."""
        if self._layout is None:
            from compute_ctl.compute.remote_ext import unpack

            try:
                out, _ = await self._tools.run(
                    [self._tools.tool("pg_config"), "--version", "--sharedir", "--pkglibdir"]
                )
                version, sharedir, pkglibdir = out.decode().splitlines()[:3]
                pg_version = names.pg_version_tag(version)
            except (errors.ComputeError, ValueError) as e:
                raise DownloadFailed(f"cannot read pg_config: {e}") from e
            self._layout = Layout(
                pg_version=pg_version,
                targets=unpack.Targets(
                    extension_dir=Path(sharedir) / "extension",
                    pkglibdir=Path(pkglibdir),
                    staging_root=self._tools.postgres.parent.parent / "download_extensions",
                ),
            )
        return self._layout

    # --- at start --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def preloading(
        self, spec: spec_mod.ComputeSpec, *, timings: state.Timings
    ) -> AsyncIterator[None]:
        """Run the preload (Neon's pre-task) while the body runs; its error fails the start.

        Nothing happens without ``spec.remote_extensions``.
        """
        if spec.remote_extensions is None:
            yield
            return
        task = asyncio.get_running_loop().create_task(self._preload(spec, timings))
        try:
            yield
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        await task

    async def _preload(self, spec: spec_mod.ComputeSpec, timings: state.Timings) -> None:
        remote = _parse(spec)
        await self._write_control_files(remote)
        if self.base_url is None:
            return  # Neon: all metrics 0
        started = time.monotonic()
        libraries = names.preload_names(spec, remote)
        # Any name that does not resolve fails the start (Neon).
        exts = [names.resolve(remote, lib, is_library=True) for lib in libraries]
        results = await asyncio.gather(
            *(self.download(ext) for ext in dict.fromkeys(exts)), return_exceptions=True
        )
        sizes = []
        for ext, result in zip(dict.fromkeys(exts), results, strict=True):
            if isinstance(result, BaseException):
                logger.error("preload of %s failed: %s", ext, result)
            else:
                sizes.append(result)
        timings.load_ext_ms = state.monotonic_ms(started)
        timings.num_ext_downloaded = len(sizes)
        timings.largest_ext_size = max(sizes, default=0)
        timings.total_ext_download_size = sum(sizes)
        logger.info("preloaded remote libraries %s in %d ms", libraries, timings.load_ext_ms)

    async def _write_control_files(self, remote: names.RemoteExtSpec) -> None:
        files = names.control_files(remote)
        if not files:
            return
        directory = (await self.layout()).targets.extension_dir

        def write() -> None:
            for name, text in files:
                if safefs.exists(directory, name):
                    logger.warning("control file %s exists; keeping the local one", name)
                    continue
                try:
                    safefs.write_text(directory, name, text, owner=_ROOT, mode=0o644)
                except OSError as e:  # Neon panics: the start fails either way
                    raise errors.ComputeError(
                        f"cannot write control file {directory / name}: {e.strerror or e}"
                    ) from e

        await asyncio.to_thread(write)


def _parse(spec: spec_mod.ComputeSpec) -> names.RemoteExtSpec:
    assert spec.remote_extensions is not None
    try:
        return names.parse(spec.remote_extensions)
    except pydantic.ValidationError as e:  # admission refuses these; a spec built elsewhere
        raise SpecUnavailable(f"remote_extensions: {spec_mod.format_validation_error(e)}") from None
