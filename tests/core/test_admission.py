"""Admission, pure: every invalid family is refused naming its object, and what it admits
is complete (desired catalog, storage target, the conf the launcher writes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compute_ctl.compute import admission, errors, pgconf
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import desired as desired_mod
from tests import invalid_specs
from tests.core import helpers

PORT = 55432
RULES = admission.Rules(
    superuser="cloud_admin", maintenance_db="postgres", local_port=PORT, socket_dir="/sock"
)


def _good() -> dict[str, object]:
    return helpers.spec_json(port=PORT)


@pytest.mark.parametrize("family", invalid_specs.FAMILIES, ids=lambda f: f.id)
def test_every_family_is_refused_naming_the_object(family: invalid_specs.Family) -> None:
    bad = invalid_specs.invalid(_good(), family)
    with pytest.raises(errors.AdmissionError) as caught:
        admission.admit_spec(bad, rules=RULES)
    assert family.needle in str(caught.value)
    assert str(caught.value).startswith("spec")
    # The same through a config, as the CLI and /configure see it.
    with pytest.raises(errors.AdmissionError, match=r"^config file x: spec"):
        admission.admit_config({"spec": bad}, rules=RULES, where="config file x")


def test_admitted_carries_desired_storage_and_conf() -> None:
    admitted = admission.admit_spec(_good(), rules=RULES)
    assert admitted.storage.kind == "local"
    assert not admitted.storage.uses_storage
    assert admitted.desired == desired_mod.from_spec(
        admitted.spec, privileged_role="neon_superuser"
    )
    assert admitted.hash == spec_mod.spec_hash(admitted.spec)
    expected = pgconf.render_postgresql_conf(
        admitted.spec, pgconf.ConfContext(local_port=PORT, socket_dir="/sock")
    )
    assert admitted.conf == expected
    config = admission.admit_config({"spec": None}, rules=RULES)
    assert config.spec is None


def test_owner_may_be_the_superuser_or_the_privileged_role() -> None:
    spec = helpers.spec_json(port=PORT, databases=(("a", "cloud_admin"), ("b", "neon_superuser")))
    admitted = admission.admit_spec(spec, rules=RULES)
    assert [d.owner for d in admitted.desired.databases] == ["cloud_admin", "neon_superuser"]
    # Without knowing -C (the operator's default rules), the superuser is not an owner.
    with pytest.raises(errors.AdmissionError, match="owner 'cloud_admin'"):
        admission.admit_spec(spec, rules=admission.Rules())


@pytest.mark.parametrize("name", ["work_mem\n", "work_mem\r", " work_mem", "a..b", "1x"])
def test_setting_names_are_matched_whole(name: str) -> None:
    option = spec_mod.GenericOption(name=name, value="1", vartype="integer")
    with pytest.raises(errors.ConfigError, match="invalid setting name"):
        pgconf.render_option(option)


def test_a_raw_value_with_a_line_break_is_quoted() -> None:
    option = spec_mod.GenericOption(name="work_mem", value="4MB\n", vartype="integer")
    assert pgconf.render_option(option) == "work_mem = '4MB\\n'"


@pytest.mark.parametrize("value", ["ep-quiet-lake-123456", "br-x_1.2:3", "p" * 128])
def test_plain_ids_pass(value: str) -> None:
    spec = _good() | {"endpoint_id": value, "branch_id": value, "project_id": value}
    admission.admit_spec(spec, rules=RULES)


@pytest.mark.parametrize("value", ["", "-x", "a b", "a\\b", "a\x00", "p" * 129, "é"])
def test_unsafe_ids_are_refused(value: str) -> None:
    with pytest.raises(errors.AdmissionError, match=r"spec\.branch_id"):
        admission.admit_spec(_good() | {"branch_id": value}, rules=RULES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reconfigure_concurrency", 0),
        ("swap_size_bytes", -1),
        ("disk_quota_bytes", 2**63),
        ("safekeepers_generation", 2**32),
        ("offload_lfc_interval_seconds", -1),
    ],
)
def test_numeric_ranges(field: str, value: int) -> None:
    with pytest.raises(errors.AdmissionError, match=field):
        admission.admit_spec(_good() | {field: value}, rules=RULES)


@pytest.mark.parametrize("limit", ["-1", "0", "2147483647"])
def test_connection_limits_in_range_pass(limit: str) -> None:
    spec = _good()
    spec["cluster"]["roles"][0]["options"] = [  # type: ignore[index]
        {"name": "CONNECTION LIMIT", "value": limit, "vartype": "integer"}
    ]
    admitted = admission.admit_spec(spec, rules=RULES)
    assert admitted.desired.roles[0].attrs.connlimit == int(limit)


def test_port_must_agree_with_connstr() -> None:
    with pytest.raises(errors.AdmissionError, match="disagrees with -C/--connstr port"):
        admission.admit_spec(helpers.spec_json(port=PORT + 1), rules=RULES)
    admission.admit_spec(helpers.spec_json(port=PORT + 1), rules=admission.Rules())


@pytest.mark.parametrize(
    "storage",
    [
        {"pageserver_connstring": "postgresql://u:pw@ps:1/\x01shared_preload_libraries='x'"},
        {
            "pageserver_connection_info": {
                "shards": {
                    "0000": {
                        "pageservers": [
                            {"libpq_url": "postgresql://ps:1", "grpc_url": "grpc://x\x1by"}
                        ]
                    }
                }
            }
        },
    ],
)
def test_storage_values_never_break_a_conf_line(storage: dict[str, object]) -> None:
    spec = _good() | {
        "tenant_id": "a" * 32,
        "timeline_id": "b" * 32,
        "safekeeper_connstrings": ["sk:1"],
    }
    admission.admit_spec(spec | {"pageserver_connstring": "postgresql://ps:1"}, rules=RULES)
    with pytest.raises(errors.AdmissionError, match="a line break or a control") as caught:
        admission.admit_spec(spec | storage, rules=RULES)
    assert "pw" not in str(caught.value)


def test_socket_directory_is_ours_unless_loopback_is_trusted() -> None:
    spec = helpers.spec_json(port=PORT, settings=[("unix_socket_directories", "/tmp", "string")])
    managed = dataclasses.replace(RULES, socket_managed=True)
    with pytest.raises(errors.AdmissionError, match="unix_socket_directories is managed"):
        admission.admit_spec(spec, rules=managed)
    admission.admit_spec(spec, rules=RULES)  # --trust-superuser-on-loopback, or the operator
    params = helpers.make_params(pgdata=Path("/x/pgdata"), port=PORT)
    assert admission.Rules.for_params(params).socket_managed
    loopback = helpers.make_params(pgdata=Path("/x"), port=PORT, trust_superuser_on_loopback=True)
    assert not admission.Rules.for_params(loopback).socket_managed


def test_line_breaks_in_storage_values_stay_escaped_on_their_line() -> None:
    spec = _good() | {
        "tenant_id": "a" * 32,
        "timeline_id": "b" * 32,
        "safekeeper_connstrings": ["sk:1"],
        "pageserver_connstring": "postgresql://ps:1/\nshared_preload_libraries='x'",
    }
    conf = admission.admit_spec(spec, rules=RULES).conf
    assert "\\nshared_preload_libraries=''x''" in conf
    assert not any(line.startswith("shared_preload_libraries='x'") for line in conf.splitlines())
