"""Where the storage is (with Neon's fallbacks), the spec checks and the conf lines."""

from __future__ import annotations

from typing import Any

import pytest

from compute_ctl.compute import errors, storage
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.storage import checks, conninfo

TENANT = "9e4a1c0d5b7f42a8b3c6d2e1f0a9b8c7"
TIMELINE = "1f2e3d4c5b6a47988766554433221100"


def make_spec(**fields: Any) -> spec_mod.ComputeSpec:
    settings = fields.pop("settings", [])
    return spec_mod.ComputeSpec.model_validate(
        {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [], "databases": [], "settings": settings},
            **fields,
        }
    )


def neon_spec(**fields: Any) -> spec_mod.ComputeSpec:
    base: dict[str, Any] = {
        "tenant_id": TENANT,
        "timeline_id": TIMELINE,
        "pageserver_connstring": "postgresql://no_user@ps-0:6400",
        "safekeeper_connstrings": ["sk-0:5454", "sk-1:5454", "sk-2:5454"],
    }
    base.update(fields)
    return make_spec(**base)


def guc(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value, "vartype": "string"}


def test_sharded_connection_info_is_read_in_shard_order() -> None:
    info = {
        "shard_count": 2,
        "stripe_size": 32768,
        "shards": {
            "0102": {"pageservers": [{"id": 2, "libpq_url": "postgresql://no_user@ps-1:6400"}]},
            "0002": {
                "pageservers": [
                    {"id": 1, "libpq_url": "postgresql://no_user@ps-0:6400"},
                    {"id": 9, "libpq_url": "postgresql://no_user@ps-9:6400"},
                ]
            },
        },
    }
    ps = conninfo.pageservers(make_spec(pageserver_connection_info=info))
    assert ps is not None
    assert ps.shard_count == 2
    assert ps.stripe_size == 32768
    assert ps.libpq_urls() == ["postgresql://no_user@ps-0:6400", "postgresql://no_user@ps-1:6400"]
    assert ps.shard0.libpq_url == "postgresql://no_user@ps-0:6400"


def test_unsharded_connection_info_uses_shard_0000() -> None:
    info = {
        "shard_count": 0,
        "shards": {"0000": {"pageservers": [{"libpq_url": "postgresql://a"}]}},
    }
    ps = conninfo.pageservers(make_spec(pageserver_connection_info=info))
    assert ps is not None
    assert ps.libpq_urls() == ["postgresql://a"]


def test_missing_shard_is_a_config_error() -> None:
    info = {
        "shard_count": 2,
        "shards": {"0002": {"pageservers": [{"libpq_url": "postgresql://a"}]}},
    }
    with pytest.raises(errors.ConfigError, match="shard 0102 missing"):
        conninfo.pageservers(make_spec(pageserver_connection_info=info))


def test_connstring_list_is_one_url_per_shard_with_stripe_size() -> None:
    spec = make_spec(pageserver_connstring="postgresql://a,postgresql://b", shard_stripe_size=2048)
    ps = conninfo.pageservers(spec)
    assert ps is not None
    assert (ps.shard_count, ps.stripe_size) == (2, 2048)
    assert ps.libpq_urls() == ["postgresql://a", "postgresql://b"]


def test_single_connstring_is_unsharded() -> None:
    ps = conninfo.pageservers(make_spec(pageserver_connstring="postgresql://a"))
    assert ps is not None
    assert ps.shard_count == 0


def test_gucs_are_the_last_fallback() -> None:
    spec = make_spec(
        settings=[
            guc("neon.pageserver_connstring", "postgresql://g0,postgresql://g1"),
            {"name": "neon.stripe_size", "value": "4096", "vartype": "integer"},
            guc("neon.safekeepers", "g#7:sk-a:5454,sk-b:5454"),
            guc("neon.tenant_id", TENANT),
            guc("neon.timeline_id", TIMELINE),
        ]
    )
    ps = conninfo.pageservers(spec)
    assert ps is not None
    assert (ps.shard_count, ps.stripe_size) == (2, 4096)
    sks = conninfo.safekeepers(spec)
    assert sks.connstrings == ("sk-a:5454", "sk-b:5454")
    assert sks.generation == 7
    assert conninfo.tenant_timeline(spec) == (TENANT, TIMELINE)
    checks.check_spec(spec)  # a complete spec through GUCs alone


def test_spec_fields_win_over_gucs() -> None:
    spec = neon_spec(settings=[guc("neon.pageserver_connstring", "postgresql://guc")])
    ps = conninfo.pageservers(spec)
    assert ps is not None
    assert ps.libpq_urls() == ["postgresql://no_user@ps-0:6400"]


def test_no_pageserver_at_all() -> None:
    assert conninfo.pageservers(make_spec()) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"safekeeper_connstrings": []}, "safekeeper_connstrings is empty"),
        ({"safekeeper_connstrings": ["a:1", "b:1", "a:1"]}, "duplicate entry.*a:1"),
        ({"safekeeper_connstrings": ["nohostport"]}, "invalid safekeeper address"),
        ({"tenant_id": None}, "tenant id should be provided"),
        ({"timeline_id": None}, "timeline id should be provided"),
        ({"pageserver_connstring": None}, "pageserver connection info"),
    ],
)
def test_bad_neon_specs_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        storage.check_spec(neon_spec(**fields))


def test_safekeeper_checks_apply_to_primaries_only() -> None:
    storage.check_spec(neon_spec(safekeeper_connstrings=[], mode="Replica"))
    storage.check_spec(neon_spec(safekeeper_connstrings=[], mode={"Static": "0/16B3748"}))
    storage.check_spec(neon_spec(safekeeper_connstrings=["a:1", "b:1", "c:1", "d:1"]))


def test_vanilla_replica_checks() -> None:
    ok = make_spec(primary_connstring="postgresql://u:secret@db:5432/postgres", mode="Replica")
    storage.check_spec(ok)
    with pytest.raises(errors.ConfigError, match='needs mode "Replica"'):
        storage.check_spec(make_spec(primary_connstring="postgresql://db"))
    with pytest.raises(errors.ConfigError, match="cannot be combined"):
        storage.check_spec(neon_spec(primary_connstring="postgresql://db", mode="Replica"))
    with pytest.raises(errors.ConfigError, match="not a valid libpq") as info:
        storage.check_spec(
            make_spec(primary_connstring="host=db password=hunter2 =", mode="Replica")
        )
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is None


def test_local_mode_has_no_storage_lines() -> None:
    assert storage.neon_conf_lines(make_spec()) == []


def test_neon_conf_lines_golden() -> None:
    spec = neon_spec(
        pageserver_connstring="postgresql://a,postgresql://b",
        shard_stripe_size=2048,
        safekeepers_generation=3,
        project_id="proj",
        branch_id="br",
        endpoint_id="ep-it's",
        storage_auth_token="SECRET-TOKEN",
    )
    lines = storage.neon_conf_lines(spec)
    assert lines == [
        "# Neon storage settings",
        "neon.stripe_size=2048",
        "neon.pageserver_connstring='postgresql://a,postgresql://b'",
        "neon.safekeepers='g#3:sk-0:5454,sk-1:5454,sk-2:5454'",
        f"neon.tenant_id='{TENANT}'",
        f"neon.timeline_id='{TIMELINE}'",
        "neon.project_id='proj'",
        "neon.branch_id='br'",
        "neon.endpoint_id='ep-it''s'",
    ]
    assert not any("SECRET" in line for line in lines)


def test_conf_values_with_line_breaks_stay_on_their_line() -> None:
    lines = storage.neon_conf_lines(neon_spec(endpoint_id="ep\nshared_buffers=1"))
    assert "neon.endpoint_id='ep\\nshared_buffers=1'" in lines


def test_connection_info_without_libpq_urls_writes_no_connstring() -> None:
    info = {"shard_count": 0, "shards": {"0000": {"pageservers": [{"grpc_url": "grpc://a"}]}}}
    lines = storage.neon_conf_lines(
        neon_spec(pageserver_connstring=None, pageserver_connection_info=info)
    )
    assert "# no neon.pageserver_connstring" in lines
    assert "neon.pageserver_grpc_urls='grpc://a'" in lines


# Issue 12 item 4: a spec's connection strings reach libpq in the root process.
FILE_KEYS = ["sslkeylogfile", "sslkey", "sslcert", "sslrootcert", "sslcrl", "passfile", "service"]


@pytest.mark.parametrize("key", FILE_KEYS)
@pytest.mark.parametrize("where", ["pageserver_connstring", "connection_info", "guc", "primary"])
def test_conninfo_keys_that_name_local_files_are_refused(key: str, where: str) -> None:
    url = f"postgresql://no_user@ps-0:6400?{key}=/etc/shadow-or-a-keylog"
    if where == "pageserver_connstring":
        spec = neon_spec(pageserver_connstring=url)
    elif where == "connection_info":
        info = {"shards": {"0000": {"pageservers": [{"id": 1, "libpq_url": url}]}}}
        spec = neon_spec(pageserver_connstring=None, pageserver_connection_info=info)
    elif where == "guc":
        spec = neon_spec(
            pageserver_connstring=None, settings=[guc("neon.pageserver_connstring", url)]
        )
    else:
        spec = make_spec(primary_connstring=f"host=db user=u {key}=/x", mode="Replica")
    with pytest.raises(errors.ConfigError, match=f"may not set: {key}"):
        storage.check_spec(spec)


def test_every_shard_url_is_checked_and_allowed_keys_pass() -> None:
    storage.check_spec(
        neon_spec(pageserver_connstring="host=ps-0 port=6400 sslmode=require connect_timeout=5")
    )
    bad = "postgresql://no_user@ps-0:6400,postgresql://no_user@ps-1:6400?passfile=/root/.pgpass"
    with pytest.raises(errors.ConfigError, match="may not set: passfile"):
        storage.check_spec(neon_spec(pageserver_connstring=bad))


@pytest.mark.parametrize(
    "address", ["a?sslkeylogfile=/tmp/k&host=b:5454", "a/b:5454", "a b:5454", "@x:5454", ":5454"]
)
def test_safekeeper_address_cannot_smuggle_url_parameters(address: str) -> None:
    with pytest.raises(errors.ConfigError, match="invalid safekeeper address"):
        storage.check_spec(neon_spec(safekeeper_connstrings=[address, "sk-1:5454"]))
    assert conninfo.split_host_port("[::1]:5454") == ("::1", 5454)
