"""The pure parts: wire rendering, the sizing and threshold numbers, figure parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute_ctl.compute import errors as compute_errors
from compute_ctl.compute.vm_monitor import cgroup, filecache, protocol, runner, server
from compute_ctl.compute.vm_monitor import errors as monitor_errors

MiB = 1 << 20


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (protocol.UpscaleRequest(id=3), '{"type":"UpscaleRequest","id":3}'),
        (protocol.UpscaleConfirmation(id=2), '{"type":"UpscaleConfirmation","id":2}'),
        (protocol.HealthCheckEcho(id=4), '{"type":"HealthCheck","id":4}'),
        (
            protocol.DownscaleResult(Ok=False, Status="calculated memory threshold too low", id=2),
            '{"type":"DownscaleResult","Ok":false,'
            '"Status":"calculated memory threshold too low","id":2}',
        ),
        (
            protocol.InternalError(error="failed to downscale", id=2),
            '{"type":"InternalError","error":"failed to downscale","id":2}',
        ),
        (
            protocol.InvalidMessage(error='bad "frame"\n', id=0),
            '{"type":"InvalidMessage","error":"bad \\"frame\\"\\n","id":0}',
        ),
        (
            protocol.UpscaleRequest(id=2**64 - 1),
            '{"type":"UpscaleRequest","id":18446744073709551615}',
        ),
    ],
)
def test_outbound_frames_are_byte_exact(message: protocol.Outbound, wire: str) -> None:
    assert protocol.encode(message) == wire


def test_inbound_envelope_ignores_cpu_and_extra_keys() -> None:
    message = protocol.parse_inbound(
        '{"content":{"target":{"cpu":1,"mem":1073741824},"x":1},'
        '"type":"DownscaleRequest","id":2,"extra":true}'
    )
    assert isinstance(message, protocol.DownscaleRequest)
    assert (message.id, message.content.target.mem) == (2, 1 << 30)


@pytest.mark.parametrize(
    "text", ['{"min":1,"max":1.0}', '{"min":true,"max":1}', '{"min":1,"max":256}', "[1,1]"]
)
def test_version_range_is_strict(text: str) -> None:
    with pytest.raises(protocol.InvalidFrame):
        protocol.parse_version_range(text)


@pytest.mark.parametrize(
    ("memory_mib", "cache_mib"),
    # Upstream's examples (usable memory after the 100 MiB buffer) and the edges.
    [(924, 607), (1948, 1461), (3996, 2997), (1024, 698), (256, 0), (100, 0), (257, 0)],
)
def test_cache_size_formula(memory_mib: int, cache_mib: int) -> None:
    size = filecache.FileCacheConfig().calculate_cache_size(memory_mib * MiB)
    assert size == cache_mib * MiB


def test_cache_size_terms_cross_near_1463_mib() -> None:
    config = filecache.FileCacheConfig()
    assert config.calculate_cache_size(1400 * MiB) < int(0.75 * 1400) * MiB  # spread term
    assert config.calculate_cache_size(1500 * MiB) == int(0.75 * 1500) * MiB  # multiplier


@pytest.mark.parametrize(
    "kwargs",
    [{"resource_multiplier": 1.0}, {"spread_factor": -0.1}, {"spread_factor": 0.5}],
)
def test_invalid_cache_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"resource_multiplier|spread_factor"):
        filecache.FileCacheConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("num_bytes", "shown"),
    [
        (runner.Config().threshold(924 * MiB), "785.4"),
        (runner.Config().threshold(4 << 30), "3481.6"),
        (607 * MiB, "607"),
        (0, "0"),
        (100 * MiB, "100"),
        (3_000_000_000, "2861.023"),
    ],
)
def test_mebibytes_print_like_upstream_f32(num_bytes: int, shown: str) -> None:
    assert runner.mib(num_bytes) == shown


def test_threshold_is_floor_of_85_percent() -> None:
    assert runner.Config().threshold(1000) == 850
    assert runner.Config().threshold(924 * MiB) == 823551590


def test_memory_stat_parsing(tmp_path: Path) -> None:
    (tmp_path / "memory.stat").write_text(
        "anon 999\nactive_anon 300\ninactive_anon 200\nactive_file 7\n"
    )
    assert cgroup.read_non_reclaimable(tmp_path) == 500
    (tmp_path / "memory.stat").write_text("anon 999\nactive_anon 300\n")
    with pytest.raises(monitor_errors.CgroupError, match="inactive_anon"):
        cgroup.read_non_reclaimable(tmp_path)
    with pytest.raises(monitor_errors.CgroupError, match="cannot read"):
        cgroup.read_non_reclaimable(tmp_path / "absent")


def test_mem_total(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        4028232 kB\nMemFree:          123 kB\n")
    assert cgroup.read_mem_total(meminfo) == 4028232 * 1024
    assert cgroup.read_mem_total() > 0


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [("0.0.0.0:10301", ("0.0.0.0", 10301)), ("[::]:10301", ("::", 10301))],
)
def test_addr_parsing(addr: str, parsed: tuple[str, int]) -> None:
    assert server.parse_addr(addr) == parsed


@pytest.mark.parametrize("addr", ["10301", ":10301", "host:", "host:99999", "host:http"])
def test_bad_addr_is_a_config_error(addr: str) -> None:
    with pytest.raises(compute_errors.ConfigError, match="vm-monitor address"):
        server.parse_addr(addr)
