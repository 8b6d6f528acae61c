"""Name resolution, the download layout and the preload list (pure), and the spec's
shape at admission."""

from __future__ import annotations

from typing import Any

import pytest

from compute_ctl.compute import admission, errors
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.remote_ext import names
from tests.support import specs

REMOTE: dict[str, Any] = {
    "public_extensions": ["postgis", "anon"],
    "custom_extensions": ["mine"],
    "library_index": {"postgis-3": "postgis", "anon": "anon", "ghost": "ghost"},
    "extension_data": {
        "postgis": {"control_data": {"postgis.control": "c"}, "archive_path": "unused"},
        "anon": {"control_data": {"anon.control": "a"}, "archive_path": ""},
        "mine": {"control_data": {"mine.control": "m"}, "archive_path": ""},
        "secret": {"control_data": {"secret.control": "s"}, "archive_path": ""},
    },
}


def _remote(**overrides: Any) -> names.RemoteExtSpec:
    return names.parse({**REMOTE, **overrides})


@pytest.mark.parametrize(
    ("name", "is_library", "ext"),
    [
        ("postgis", False, "postgis"),
        ("mine", False, "mine"),
        ("postgis-3.so", True, "postgis"),
        ("postgis-3.so.1", True, "postgis"),
        ("postgis-3", True, "postgis"),
    ],
)
def test_resolve(name: str, is_library: bool, ext: str) -> None:
    assert names.resolve(_remote(), name, is_library=is_library) == ext


@pytest.mark.parametrize(
    ("name", "is_library", "message"),
    [
        ("nope.so", True, "library nope is not found"),
        ("secret", False, "extension secret is not found"),  # not in either list
        ("ghost", True, "real_ext_name ghost is not found"),  # indexed, no data
        ("postgis-3.so", False, "extension postgis-3.so is not found"),
    ],
)
def test_resolve_refusals_carry_neons_messages(name: str, is_library: bool, message: str) -> None:
    remote = _remote(public_extensions=["postgis", "anon", "ghost"])
    with pytest.raises(names.NotFound, match=f"^{message}$"):
        names.resolve(remote, name, is_library=is_library)


def test_layout() -> None:
    assert (
        names.remote_path(build_tag="latest", arch="amd64", pg_version="v15", ext="postgis")
        == "latest/amd64/v15/extensions/postgis.tar.zst"
    )
    assert names.pg_version_tag("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)\n") == "v15"
    assert names.arch_tag("x86_64") == "amd64"
    assert names.arch_tag("aarch64") == "arm64"
    assert names.arch_tag("riscv64") == "riscv64"


def _spec(*, setting: str | None = None, conf: str | None = None) -> spec_mod.ComputeSpec:
    raw = specs.local_spec(port=5432)
    if setting is not None:
        raw["cluster"]["settings"] = [
            {"name": "shared_preload_libraries", "value": setting, "vartype": "string"}
        ]
    if conf is not None:
        raw["cluster"]["postgresql_conf"] = conf
    return spec_mod.ComputeSpec.model_validate(raw)


def test_preload_names_from_settings_and_the_last_conf_line() -> None:
    spec = _spec(
        setting="neon, 'postgis-3',pg_stat_statements",
        conf="shared_preload_libraries='ignored'\nwork_mem=1MB\n"
        "shared_preload_libraries = 'anon,databricks_auth' # last one wins\n",
    )
    # neon/databricks_auth always local; pg_stat_statements is not in the index: local.
    assert names.preload_names(spec, _remote()) == ["postgis-3", "anon"]


def test_control_files_follow_neons_allowlist_quirk() -> None:
    both = {name for name, _ in names.control_files(_remote())}
    assert both == {"postgis.control", "anon.control", "mine.control"}
    # A null custom list (or a null public list) writes every extension's control file.
    assert len(names.control_files(_remote(custom_extensions=None))) == 4
    assert len(names.control_files(_remote(public_extensions=None))) == 4


def _admit(remote: Any) -> admission.Admitted:
    raw = specs.local_spec(port=5432)
    raw["remote_extensions"] = remote
    return admission.admit_spec(
        raw, rules=admission.Rules(superuser="cloud_admin", local_port=5432)
    )


def test_admission_accepts_neons_shape() -> None:
    assert _admit(REMOTE).spec.remote_extensions == REMOTE


@pytest.mark.parametrize(
    ("remote", "fragment"),
    [
        ({"extension_data": {}}, "library_index: Field required"),
        ({"library_index": {}}, "extension_data: Field required"),
        (
            {
                "library_index": {},
                "extension_data": {"../x": {"control_data": {}, "archive_path": ""}},
            },
            "extension name '../x'",
        ),
        (
            {
                "library_index": {},
                "extension_data": {
                    "x": {"control_data": {"../../x.control": ""}, "archive_path": ""}
                },
            },
            "control file name '../../x.control'",
        ),
    ],
)
def test_admission_refuses_a_bad_shape_or_unsafe_names(remote: Any, fragment: str) -> None:
    with pytest.raises(errors.AdmissionError, match="remote_extensions") as caught:
        _admit(remote)
    assert fragment in str(caught.value)
