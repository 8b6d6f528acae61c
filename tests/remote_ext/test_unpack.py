"""Unpacking is safe: hostile members are refused before anything is placed, only
``share/extension`` and ``lib`` are used, directories merge, staging is removed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from compute_ctl.compute.remote_ext import unpack
from tests.support import remote_ext as ext_support


def _targets(root: Path) -> unpack.Targets:
    targets = unpack.Targets(
        extension_dir=root / "share" / "extension",
        pkglibdir=root / "lib",
        staging_root=root / "download_extensions",
    )
    targets.extension_dir.mkdir(parents=True)
    targets.pkglibdir.mkdir(parents=True)
    return targets


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"data of " + name.encode()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type = kind
    return member, b""


def _unpack(data: bytes, targets: unpack.Targets) -> list[str]:
    return unpack.unpack(io.BytesIO(data), targets=targets, what="t.tar.zst")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_files_are_placed_and_staging_is_removed(tmp_path: Path) -> None:
    targets = _targets(tmp_path)
    (targets.pkglibdir / "bitcode" / "old").mkdir(parents=True)
    (targets.pkglibdir / "bitcode" / "old" / "keep.bc").write_bytes(b"old")
    (targets.pkglibdir / "x.so").write_bytes(b"previous version")
    data = ext_support.raw_archive(
        [
            _file("share/extension/x.control"),
            _file("share/extension/x--1.0.sql"),
            _file("lib/x.so"),
            _link("lib/libx.so", "x.so"),  # a link down the tree is fine
            _file("lib/bitcode/x/x.bc"),
            _file("etc/ignored"),  # neither share/extension nor lib: not extracted
        ]
    )
    placed = _unpack(data, targets)
    assert sorted(placed) == ["bitcode", "libx.so", "x--1.0.sql", "x.control", "x.so"]
    assert (targets.pkglibdir / "x.so").read_bytes() == b"data of lib/x.so"  # replaced
    assert os.readlink(targets.pkglibdir / "libx.so") == "x.so"
    # The bitcode directory merged into the existing one (Neon's rename would fail).
    assert (targets.pkglibdir / "bitcode" / "x" / "x.bc").exists()
    assert (targets.pkglibdir / "bitcode" / "old" / "keep.bc").read_bytes() == b"old"
    assert list(targets.staging_root.iterdir()) == []
    assert not (tmp_path / "etc").exists()
    mode = (targets.extension_dir / "x.control").stat().st_mode & 0o777
    assert mode & 0o022 == 0  # never group- or world-writable


@pytest.mark.parametrize(
    "member",
    [
        _file("share/extension/../../../escaped"),
        _file("/share/extension/absolute"),
        _link("lib/out.so", "/etc/passwd"),
        _link("lib/up.so", "../../escaped"),
        _link("lib/hard.so", "../escaped", tarfile.LNKTYPE),
        _special("lib/fifo", tarfile.FIFOTYPE),
        _special("lib/dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-absolute", "symlink-up", "hardlink-up", "fifo", "device"],
)
def test_a_hostile_member_fails_the_unpack_and_places_nothing(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    targets = _targets(tmp_path)
    before = _tree(tmp_path)
    data = ext_support.raw_archive([_file("share/extension/first.control"), member])
    with pytest.raises(unpack.UnsafeArchive):
        _unpack(data, targets)
    assert _tree(tmp_path) - before <= {"download_extensions"}
    assert list(targets.staging_root.iterdir()) == []


@pytest.mark.parametrize(
    "data", [b"not zstd at all", ext_support.raw_archive([_file("lib/x.so")])[:-20]]
)
def test_a_corrupt_or_truncated_archive_fails(tmp_path: Path, data: bytes) -> None:
    targets = _targets(tmp_path)
    with pytest.raises(unpack.UnsafeArchive, match=r"not a valid \.tar\.zst archive"):
        _unpack(data, targets)
    assert list(targets.pkglibdir.iterdir()) == []


def test_the_unpacked_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_UNPACKED_BYTES", 10)
    targets = _targets(tmp_path)
    with pytest.raises(unpack.UnsafeArchive, match="more than 10 bytes"):
        _unpack(ext_support.raw_archive([_file("lib/big.so")]), targets)
    assert list(targets.pkglibdir.iterdir()) == []


def test_an_entry_that_cannot_be_placed_fails_after_the_others_are_placed(tmp_path: Path) -> None:
    targets = _targets(tmp_path)
    (targets.pkglibdir / "bitcode").write_bytes(b"a file where a directory should be")
    data = ext_support.raw_archive([_file("lib/bitcode/x/x.bc"), _file("lib/y.so")])
    with pytest.raises(unpack.UnpackError, match=r"cannot place .*/lib/bitcode: ") as caught:
        _unpack(data, targets)
    assert not isinstance(caught.value, unpack.UnsafeArchive)
    assert (targets.pkglibdir / "y.so").is_file()  # Neon answers 200 here, bitcode missing
    assert list(targets.staging_root.iterdir()) == []


def test_no_staging_directory_is_an_unpack_error(tmp_path: Path) -> None:
    targets = _targets(tmp_path)
    targets.staging_root.write_bytes(b"not a directory")
    with pytest.raises(unpack.UnpackError, match="cannot create a staging directory"):
        _unpack(ext_support.raw_archive([_file("lib/y.so")]), targets)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: another user's directory")
def test_a_directory_the_postgres_user_may_change_is_refused(scratch: Path) -> None:
    targets = _targets(scratch)  # a scratch directory belongs to the PostgreSQL OS user
    with pytest.raises(unpack.UnpackError, match="may be changed by another user"):
        _unpack(ext_support.raw_archive([_file("lib/y.so")]), targets)
    assert list(targets.pkglibdir.iterdir()) == []
    assert not targets.staging_root.exists()
