"""Fixtures for the remote-extension tests: a private PostgreSQL install tree per module
(``tests.support.remote_ext.private_install``), the archives built from Debian packages,
scratch dirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver
from tests.support import remote_ext as ext_support


@pytest.fixture
def scratch() -> Iterator[Path]:
    with pgserver.scratch("remote-ext-") as path:
        yield path


@pytest.fixture(scope="module")
def install() -> Iterator[Path]:
    """``bin/postgres`` of a private copy of the install tree, without the test packages."""
    with pgserver.scratch("pg-install-") as base:
        yield ext_support.private_install(base)


@pytest.fixture(scope="module")
def prefix_archive() -> Iterator[bytes]:
    """``prefix.tar.zst`` from Debian's ``postgresql-15-prefix`` package."""
    deb = ext_support.prefix_deb()
    if deb is None:
        pytest.skip("postgresql-15-prefix .deb not in .cache/debs (COMPUTE_CTL_SETUP_TEST=1 setup)")
    with pgserver.scratch("prefix-deb-") as base:
        yield ext_support.build(ext_support.unpack_deb(deb, base))


@pytest.fixture(scope="module")
def pgaudit_archive() -> Iterator[bytes]:
    """``pgaudit.tar.zst`` from the files of the installed ``postgresql-15-pgaudit``."""
    if not (ext_support.pg_root() / "lib" / "pgaudit.so").exists():
        pytest.skip("postgresql-15-pgaudit not installed (COMPUTE_CTL_SETUP_TEST=1 setup)")
    with pgserver.scratch("pgaudit-pkg-") as base:
        yield ext_support.build(ext_support.installed_package_tree("postgresql-15-pgaudit", base))
