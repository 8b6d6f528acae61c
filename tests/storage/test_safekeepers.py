"""Safekeeper sync: the TIMELINE_STATUS fast path and ``--sync-safekeepers`` with retries."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from compute_ctl.compute import errors
from compute_ctl.compute.storage import safekeepers
from tests import pgserver
from tests.storage import doubles, neonbin

TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"
TOKEN = "storage-token"
S = safekeepers.TimelineStatus


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ([S(0x100, 0x100), S(0x100, 0x100)], "0/100"),
        ([S(0x1_0000_0200, 0x1_0000_0200)], "1/200"),
        ([S(0x100, 0x100), None], None),  # one safekeeper does not know the timeline
        ([S(0x100, 0x100), S(0x200, 0x100)], None),  # flush LSNs disagree
        ([S(0x100, 0x100), S(0x100, 0x80)], None),  # commit LSNs disagree
        ([S(0x200, 0x100), S(0x200, 0x100)], None),  # commit != flush
        ([], None),
    ],
)
def test_check_if_synced_rules(responses: list[S | None], expected: str | None) -> None:
    assert safekeepers.check_if_synced(responses) == expected


async def _fast_path(*sks: doubles.TestSafekeeper, token: str = TOKEN) -> str | None:
    async with contextlib.AsyncExitStack() as stack:
        for sk in sks:
            await stack.enter_async_context(sk)
        return await safekeepers.timeline_status_lsn(
            [sk.address for sk in sks], tenant=TENANT, timeline=TIMELINE, token=token, timeout=5
        )


async def test_fast_path_reads_the_synced_lsn_and_passes_ids_and_token() -> None:
    sks = [doubles.TestSafekeeper(token=TOKEN, flush_lsn="0/2A", commit_lsn="0/2a") for _ in "abc"]
    assert await _fast_path(*sks) == "0/2A"
    asked = [sk for sk in sks if sk.queries]
    assert len(asked) >= 2  # a quorum of 3
    for sk in asked:
        assert sk.queries == ["TIMELINE_STATUS"]
        assert sk.startups[0]["user"] == "no_user"
        assert sk.startups[0]["options"] == f"-c timeline_id={TIMELINE} tenant_id={TENANT}"


async def test_fast_path_works_with_md5_password_auth() -> None:
    assert await _fast_path(doubles.TestSafekeeper(token=TOKEN, auth="md5")) == "0/169AD58"


async def test_fast_path_needs_the_right_token() -> None:
    sk = doubles.TestSafekeeper(token=TOKEN)
    assert await _fast_path(sk, token="wrong") is None
    assert sk.auth_failures == 1


async def test_fast_path_tolerates_a_minority_down() -> None:
    port = pgserver.free_port()  # nothing listens there
    sks = [doubles.TestSafekeeper(token=TOKEN) for _ in "ab"]
    async with sks[0], sks[1]:
        lsn = await safekeepers.timeline_status_lsn(
            [f"127.0.0.1:{port}", sks[0].address, sks[1].address],
            tenant=TENANT,
            timeline=TIMELINE,
            token=TOKEN,
            timeout=5,
        )
    assert lsn == "0/169AD58"


async def test_fast_path_fails_without_a_quorum_of_replies() -> None:
    down = [f"127.0.0.1:{pgserver.free_port()}" for _ in "ab"]
    async with doubles.TestSafekeeper(token=TOKEN) as sk:
        lsn = await safekeepers.timeline_status_lsn(
            [*down, sk.address], tenant=TENANT, timeline=TIMELINE, token=TOKEN, timeout=5
        )
    assert lsn is None


async def test_fast_path_gives_up_on_slow_safekeepers() -> None:
    sk = doubles.TestSafekeeper(token=TOKEN, delay=10)
    async with sk:
        lsn = await safekeepers.timeline_status_lsn(
            [sk.address], tenant=TENANT, timeline=TIMELINE, token=TOKEN, timeout=0.3
        )
    assert lsn is None


@pytest.mark.parametrize(
    "sks",
    [
        [{"knows_timeline": False}, {}, {}],
        [{"commit_lsn": "0/10"}, {}, {}],
        [{"commit_lsn": "0/10", "flush_lsn": "0/20"}] * 3,
    ],
)
async def test_fast_path_refuses_unsynced_safekeepers(sks: list[dict[str, object]]) -> None:
    made = [doubles.TestSafekeeper(token=TOKEN, **kw) for kw in sks]  # type: ignore[arg-type]
    # Every reply is needed to see a disagreement: make the odd one answer first.
    for sk in made[1:]:
        sk.delay = 0.2
    assert await _fast_path(*made) is None


def _pgdata_with_conf() -> Path:
    base = pgserver.scratch_dir("sync-")
    pgdata = base / "data"
    pgdata.mkdir(mode=0o700)
    (pgdata / "postgresql.conf").write_text("neon.safekeepers='sk-0:5454'\n")
    pgserver.tools().user.chown_tree(pgdata)
    return pgdata


async def test_sync_safekeepers_contract(neon_bin: neonbin.NeonBin) -> None:
    neon_bin.configure(lsn="0/16B3748")
    pgdata = _pgdata_with_conf()
    lsn = await safekeepers.sync_safekeepers(
        pgbin=neon_bin.postgres, pgdata=pgdata, tools=pgserver.tools(), token=TOKEN
    )
    assert lsn == "0/16B3748"
    assert neon_bin.calls() == [{"pgdata": str(pgdata), "token": TOKEN, "safekeepers": "sk-0:5454"}]


async def test_sync_retries_with_backoff_then_succeeds(neon_bin: neonbin.NeonBin) -> None:
    neon_bin.configure(lsn="1/2", fail=3)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    lsn = await safekeepers.sync_with_retries(
        pgbin=neon_bin.postgres,
        pgdata=_pgdata_with_conf(),
        tools=pgserver.tools(),
        token=None,
        sleep=sleep,
    )
    assert lsn == "1/2"
    assert slept == pytest.approx([1.1, 1.21, 1.331])
    assert len(neon_bin.calls()) == 4
    assert neon_bin.calls()[0]["token"] is None


async def test_sync_gives_up_after_five_retries(neon_bin: neonbin.NeonBin) -> None:
    neon_bin.configure(lsn="1/2", fail=100)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(errors.StorageError, match="could not reach a quorum"):
        await safekeepers.sync_with_retries(
            pgbin=neon_bin.postgres,
            pgdata=_pgdata_with_conf(),
            tools=pgserver.tools(),
            token=TOKEN,
            sleep=sleep,
        )
    assert len(neon_bin.calls()) == 6
    assert len(slept) == 5
    assert [safekeepers.sync_backoff(n) for n in (1, 12, 50)] == pytest.approx([1.1, 3.0, 3.0])
