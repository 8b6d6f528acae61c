"""postgresql.conf and pg_hba.conf rendering: golden text, Neon's order, quoting by vartype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compute_ctl.compute import errors, pgconf
from compute_ctl.compute import spec as spec_mod

DATA = Path(__file__).parent.parent / "data"
EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "config.json"


def _spec(path: Path) -> spec_mod.ComputeSpec:
    config = spec_mod.ComputeConfig.model_validate(json.loads(path.read_text()))
    assert config.spec is not None
    return config.spec


def _minimal(**cluster: object) -> spec_mod.ComputeSpec:
    raw = {"roles": [], "databases": [], **cluster}
    return spec_mod.ComputeSpec.model_validate(
        {"format_version": 1.0, "suspend_timeout_seconds": -1, "cluster": raw}
    )


def test_neon_storage_conf_golden() -> None:
    context = pgconf.ConfContext(
        privileged_role="neon_superuser",
        internal_port=3081,
        storage_lines=["neon.safekeepers='g#7:sk-0.storage.svc:5454'"],
        overcommit_strict=True,
    )
    text = pgconf.render_postgresql_conf(_spec(DATA / "compute_config_full.json"), context)
    assert text == (DATA / "postgresql.conf.neon.golden").read_text()


def test_local_conf_golden() -> None:
    context = pgconf.ConfContext(local_port=55432, socket_dir="/var/lib/compute/pgdata")
    text = pgconf.render_postgresql_conf(_spec(EXAMPLE), context)
    assert text == (DATA / "postgresql.conf.local.golden").read_text()


def test_hba_golden() -> None:
    assert pgconf.render_hba(superuser="cloud_admin") == (DATA / "pg_hba.conf.golden").read_text()


def test_hba_trusts_the_superuser_on_loopback_only_when_asked() -> None:
    default = pgconf.render_hba(superuser="cloud_admin").splitlines()
    assert [line.split()[0] for line in default if line.endswith("trust")] == ["local"]
    neon = pgconf.render_hba(superuser="cloud_admin", loopback=True).splitlines()
    trusted = [line.split() for line in neon if line.endswith("trust")]
    assert [row[3] for row in trusted[1:]] == ["127.0.0.1/32", "::1/128"]


def test_order_verbatim_first_managed_block_then_override_last() -> None:
    spec = _minimal(
        postgresql_conf="shared_buffers = 1MB",
        settings=[{"name": "shared_buffers", "value": "2MB", "vartype": "string"}],
    )
    lines = pgconf.render_postgresql_conf(spec, pgconf.ConfContext()).splitlines()
    assert lines[0] == "shared_buffers = 1MB"
    begin, end = lines.index(pgconf.MANAGED_BEGIN), lines.index(pgconf.MANAGED_END)
    assert lines[begin + 1 : end] == ["shared_buffers = '2MB'"]  # later line wins
    assert lines[-1] == "include_if_exists = 'compute_ctl_temp_override.conf'"
    # Local mode: of Neon's lines only the (inert) subscribers flag, as Neon writes it.
    assert [line for line in lines if line.startswith("neon.")] == [
        "neon.disable_logical_replication_subscribers=false"
    ]


def test_local_lines_only_when_the_spec_is_silent() -> None:
    context = pgconf.ConfContext(local_port=6000, socket_dir="/run/pg")
    silent = pgconf.render_postgresql_conf(_minimal(), context)
    assert "port = 6000" in silent.splitlines()
    assert "unix_socket_directories = '/run/pg'" in silent.splitlines()
    set_by_spec = _minimal(
        postgresql_conf="unix_socket_directories = '/tmp'",
        settings=[{"name": "port", "value": "6000", "vartype": "integer"}],
    )
    text = pgconf.render_postgresql_conf(set_by_spec, context)
    assert "unix_socket_directories = '/run/pg'" not in text
    assert text.count("port = 6000") == 1


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ({"name": "a", "value": "x", "vartype": "string"}, "a = 'x'"),
        ({"name": "a", "value": "it's", "vartype": "string"}, "a = 'it''s'"),
        ({"name": "a", "value": "c:\\dir", "vartype": "string"}, "a = 'c:\\\\dir'"),
        ({"name": "a", "value": "two\nlines", "vartype": "string"}, "a = 'two\\nlines'"),
        ({"name": "a", "value": "5", "vartype": "integer"}, "a = 5"),
        ({"name": "a", "value": "on", "vartype": "bool"}, "a = on"),
        ({"name": "a", "value": "64MB", "vartype": "integer"}, "a = 64MB"),
        ({"name": "a", "value": "-1", "vartype": "integer"}, "a = -1"),
        ({"name": "neon.x", "value": "1.5", "vartype": "real"}, "neon.x = 1.5"),
        ({"name": "a", "value": None, "vartype": "bool"}, "a"),
        # A raw value that is not a plain token is quoted: it cannot start a new line.
        ({"name": "a", "value": "1\nfsync = off", "vartype": "integer"}, "a = '1\\nfsync = off'"),
        ({"name": "a", "value": "x' # y", "vartype": "enum"}, "a = 'x'' # y'"),
    ],
)
def test_option_quoting_by_vartype(option: dict[str, object], line: str) -> None:
    rendered = pgconf.render_option(spec_mod.GenericOption.model_validate(option))
    assert rendered == line
    assert "\n" not in rendered


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a;b", "a\nb", "a=b", "a.", "'a'"])
def test_invalid_setting_names_are_rejected(name: str) -> None:
    option = spec_mod.GenericOption(name=name, value="1", vartype="integer")
    with pytest.raises(errors.ConfigError):
        pgconf.render_option(option)


def test_static_and_replica_modes() -> None:
    static = _minimal().model_copy(
        update={"mode": spec_mod.ComputeMode.model_validate({"Static": "1/2A"})}
    )
    text = pgconf.render_postgresql_conf(static, pgconf.ConfContext())
    assert "hot_standby=on" in text
    assert "recovery_target_lsn='1/2A'" in text
    replica = _minimal().model_copy(update={"mode": spec_mod.ComputeMode.model_validate("Replica")})
    text = pgconf.render_postgresql_conf(replica, pgconf.ConfContext())
    assert "hot_standby=on" in text
    assert "recovery_target_lsn" not in text
    assert "neon.compute_mode" not in text  # only with Neon storage


def test_conf_text_sets_ignores_comments_and_prefixes() -> None:
    text = "# port = 1\nportal = 2\n  Port=3\n"
    assert pgconf.conf_text_sets(text, "port")
    assert not pgconf.conf_text_sets("# port = 1\nportal = 2\n", "port")


def test_hba_quotes_the_superuser_and_trusts_only_it() -> None:
    text = pgconf.render_hba(superuser="Admin.User")
    trusted = [line for line in text.splitlines() if line.endswith("trust")]
    assert trusted
    assert all('"Admin.User"' in line for line in trusted)
    assert text.splitlines()[-1].split() == ["host", "all", "all", "all", "md5"]
