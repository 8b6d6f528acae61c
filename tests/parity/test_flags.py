"""Honest flags: every flag Neon's compute_ctl accepts is accepted; the ones that cannot do
anything here say so in one warning line each; the rest take effect."""

from __future__ import annotations

import logging

import pytest

from compute_ctl.compute import cli, errors

BASE = ["-D", "/tmp/x", "-C", "postgresql://cloud_admin@127.0.0.1:5432/postgres", "-i", "c1"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--resize-swap-on-bind"], "--resize-swap-on-bind"),
        (["--set-disk-quota-for-fs", "/var/db"], "--set-disk-quota-for-fs"),
        (["--pg-init-timeout", "10"], "--pg-init-timeout"),
        (["--lakebase-mode", "true"], "--lakebase-mode"),
        (["--lakebase-mode"], "--lakebase-mode"),
    ],
)
def test_neon_only_flags_are_accepted_with_one_warning(
    argv: list[str], flag: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ns = cli.build_parser({}).parse_args([*BASE, "-c", "/tmp/config.json", *argv])
    cli.params_from_args(ns, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{flag} has no effect here: ")


def test_no_warning_without_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ns = cli.build_parser({}).parse_args(
        [*BASE, "-c", "/tmp/config.json", "--lakebase-mode", "false"]
    )
    cli.params_from_args(ns, {})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_implemented_neon_flags_take_effect() -> None:
    ns = cli.build_parser({}).parse_args(
        [
            *BASE,
            "-c",
            "/tmp/config.json",
            "--installed-extensions-collection-interval",
            "120",
            "--http-port",
            "4080",
            "--dev",
            "--pgbouncer-ini",
            "/tmp/pgb.ini",
            "-r",
            "http://127.0.0.1:1/ext//",
        ]
    )
    p = cli.params_from_args(ns, {})
    assert p.installed_extensions_collection_interval == 120
    assert p.dev  # termination spares pgbouncer and local_proxy
    assert str(p.pgbouncer_ini) == "/tmp/pgb.ini"
    assert p.remote_ext_base_url == "http://127.0.0.1:1/ext/"  # Neon: one trailing slash
    assert (p.external_http_port, p.internal_http_port) == (4080, 4081)


def test_a_non_positive_collection_interval_is_refused() -> None:
    ns = cli.build_parser({}).parse_args(
        [*BASE, "-c", "/tmp/config.json", "--installed-extensions-collection-interval", "0"]
    )
    with pytest.raises(errors.ConfigError, match="collection-interval"):
        cli.params_from_args(ns, {})
