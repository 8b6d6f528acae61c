"""Admission: the one door every spec goes through before compute_ctl acts on it.

``admit_config(raw, rules=)`` and ``admit_spec(raw, rules=)`` take a raw config or spec
(parsed JSON, or an already parsed model) and return an immutable ``Admitted``: the spec,
the catalog's desired state (``catalog.desired``), the storage target and the rendered
``postgresql.conf``. Every input rule lives behind these two functions:

- the wire shape (pydantic, ``spec``): types, required fields, enum values;
- ids that reach ``postgresql.conf`` (project, branch, endpoint) are plain tokens, and
  no storage value (pageserver URLs, safekeepers) brings a line break into it;
- numeric fields are within the range Neon and PostgreSQL accept;
- the catalog (``catalog.desired``): role, database, option and delta rules (names,
  duplicates, reserved and privileged roles, renames with a target, passwords,
  ``CONNECTION LIMIT`` in PostgreSQL's range), plus what needs the compute's identity:
  every database owner is a role of the spec (or the ``-C`` superuser, or the privileged
  role), no role or delta names the ``-C`` superuser, no delta drops or renames the
  database compute_ctl works through;
- storage (``storage.check_spec``): tenant, timeline, pageserver, safekeepers, or a
  vanilla primary;
- ``remote_extensions`` has Neon's shape, with names safe in a file name and a URL
  (``remote_ext.names``);
- settings: a spec ``port`` agrees with ``-C``; no ``unix_socket_directories`` unless
  loopback is trusted (compute_ctl connects through its own socket); every setting renders to one
  ``postgresql.conf`` line (names matched whole, so ``"work_mem\\n"`` is refused);
  ``pgbouncer_settings`` keys are pgbouncer names and values one ini line (``pgbouncer``);
  ``local_proxy_config`` has Neon's shape (``local_proxy``).

Every failure raises ``errors.AdmissionError`` (a ``ConfigError``: HTTP 400, CLI exit 2)
naming the field or the object at fault. Callers (the CLI's config file and control-plane
fetch, ``/configure`` and its dry run, the operator before a push) admit first and hand
only ``Admitted`` objects on, so the start sequence and the configurator cannot meet an
input error after they have written a file or reloaded postgres.

Values of settings are not checked against ``pg_settings`` here (that needs a running
server); the configurator checks them before it writes the conf. Pure: no I/O, except
that ``Rules.for_params`` reads ``/proc/sys/vm/overcommit_memory`` once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic

from compute_ctl.compute import errors, local_proxy, pgbouncer, pgconf, pgdata, tls
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.catalog import desired as desired_mod
from compute_ctl.compute.remote_ext import names as remote_ext_names

if TYPE_CHECKING:
    from compute_ctl.compute import params as params_mod
    from compute_ctl.compute.storage import checks as storage_checks

__all__ = [
    "AdmissionError",
    "Admitted",
    "AdmittedConfig",
    "Rules",
    "StorageTarget",
    "admit_config",
    "admit_spec",
]

AdmissionError = errors.AdmissionError

# Ids written into postgresql.conf as neon.<name>: Neon's are tokens such as
# "ep-quiet-lake-123456"; anything with a quote, a blank or a line break is refused.
_CONF_IDS = ("project_id", "branch_id", "endpoint_id")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")

# What may not reach a postgresql.conf line from the storage fields (URLs, addresses).
_UNSAFE_CONF_CHARS = re.compile(r"[\x00-\x1f\x7f]")

_INT64_MAX = 2**63 - 1
_UINT32_MAX = 2**32 - 1
# (field, minimum, maximum) of the spec's integers; None fields are not checked.
_RANGES: tuple[tuple[str, int, int], ...] = (
    ("suspend_timeout_seconds", -1, _INT64_MAX),  # -1: never suspend (Neon)
    ("swap_size_bytes", 0, _INT64_MAX),
    ("disk_quota_bytes", 0, _INT64_MAX),
    ("shard_stripe_size", 1, _UINT32_MAX),
    ("safekeepers_generation", 0, _UINT32_MAX),
    ("offload_lfc_interval_seconds", 1, _INT64_MAX),  # Neon: NonZeroU64
    ("reconfigure_concurrency", 1, _INT64_MAX),
)


@dataclasses.dataclass(frozen=True)
class Rules:
    """What admission knows of the compute besides the spec.

    ``superuser``, ``maintenance_db`` and ``local_port`` come from ``-C``; ``None`` means
    unknown (the operator does not see the compute's flags) and skips the rules that need
    them. The rest is what ``pgconf`` needs to render the conf.
    """

    privileged_role: str = "neon_superuser"
    superuser: str | None = None
    maintenance_db: str | None = None
    local_port: int | None = None
    internal_port: int = 3081
    socket_dir: str | None = None
    overcommit_strict: bool = False
    # compute_ctl reaches its postgres over its private socket directory only (no
    # --trust-superuser-on-loopback): a spec must not move unix_socket_directories.
    socket_managed: bool = False
    # The process's compute_ctl_config names a TLS key and cert: a spec with the
    # tls_experimental feature gets the ssl lines (``tls``).
    tls: bool = False

    @classmethod
    def for_params(cls, params: params_mod.Params) -> Rules:
        """The rules of this compute_ctl process (its ``-C``, PGDATA and ports)."""
        local = params.local
        return cls(
            privileged_role=params.privileged_role_name,
            superuser=local.user,
            maintenance_db=local.dbname,
            local_port=local.port,
            internal_port=params.internal_http_port,
            socket_dir=pgdata.socket_dir_for(params.pgdata),
            overcommit_strict=pgdata.overcommit_strict(),
            socket_managed=not params.trust_superuser_on_loopback,
        )


@dataclasses.dataclass(frozen=True)
class StorageTarget:
    """Where PGDATA comes from: ``initdb`` (local), Neon storage, or a vanilla primary."""

    kind: Literal["local", "neon", "primary"]
    neon: storage_checks.NeonTarget | None = None
    """The checked tenant, timeline, pageserver and safekeepers (``kind == "neon"``)."""

    @property
    def uses_storage(self) -> bool:
        return self.kind != "local"


@dataclasses.dataclass(frozen=True)
class Admitted:
    """A spec that passed admission, with everything derived from it.

    The spec model itself is a pydantic object; treat it as read-only (nothing
    downstream mutates it, and ``hash`` pins its content).
    """

    spec: spec_mod.ComputeSpec
    desired: desired_mod.Desired
    storage: StorageTarget
    conf: str
    """The whole ``postgresql.conf`` for this spec on this compute."""
    hash: str
    """``spec.spec_hash(spec)``: the ETag and the resource's ``specHash``."""


@dataclasses.dataclass(frozen=True)
class AdmittedConfig:
    """A ``ComputeConfig`` that passed admission (``spec`` None: wait for ``/configure``)."""

    spec: Admitted | None
    compute_ctl_config: spec_mod.ComputeCtlConfig


def admit_config(
    raw: Mapping[str, Any] | spec_mod.ComputeConfig, *, rules: Rules, where: str = ""
) -> AdmittedConfig:
    """Validate a ``ComputeConfig``; raises ``AdmissionError`` naming the field, after
    ``where`` (the source, e.g. ``config file /x.json``) when given."""
    if isinstance(raw, spec_mod.ComputeConfig):
        config = raw
    else:
        config = _parse(spec_mod.ComputeConfig, raw, where=where or "config")
    admitted = None
    if config.compute_ctl_config.tls is not None:
        rules = dataclasses.replace(rules, tls=True)
    if config.spec is not None:
        spec_where = f"{where}: spec" if where else "spec"
        admitted = admit_spec(config.spec, rules=rules, where=spec_where)
    return AdmittedConfig(spec=admitted, compute_ctl_config=config.compute_ctl_config)


def admit_spec(
    raw: Mapping[str, Any] | spec_mod.ComputeSpec, *, rules: Rules, where: str = "spec"
) -> Admitted:
    """Validate a ``ComputeSpec``; raises ``AdmissionError`` prefixed with ``where``."""
    if isinstance(raw, spec_mod.ComputeSpec):
        spec = raw
    else:
        spec = _parse(spec_mod.ComputeSpec, raw, where=where)
    try:
        return _admit(spec, rules, where=where)
    except AdmissionError:
        raise
    except errors.ConfigError as e:  # the catalog's and the storage package's rules
        raise AdmissionError(f"{where}: {e}") from e


_M = TypeVar("_M", bound=pydantic.BaseModel)


def _parse(model: type[_M], raw: Mapping[str, Any], *, where: str) -> _M:
    if not isinstance(raw, Mapping):
        raise AdmissionError(f"{where}: must be a JSON object")
    try:
        return model.model_validate(dict(raw))
    except pydantic.ValidationError as e:
        raise AdmissionError(f"{where}: {spec_mod.format_validation_error(e)}") from e


def _admit(spec: spec_mod.ComputeSpec, rules: Rules, *, where: str) -> Admitted:
    """Field errors name ``<where>.<path>``, object errors ``<where>: <object>``."""
    _check_ids(spec, where=where)
    _check_ranges(spec, where=where)
    _check_remote_extensions(spec, where=where)
    desired = desired_mod.from_spec(spec, privileged_role=rules.privileged_role)
    _check_catalog(desired, rules, where=where)
    storage = _storage(spec)
    _check_port(spec, rules.local_port, where=where)
    try:
        pgbouncer.check_settings(spec.pgbouncer_settings)
    except ValueError as e:
        raise AdmissionError(f"{where}.pgbouncer_settings: {e}") from None
    try:
        local_proxy.check_config(spec.local_proxy_config)
    except ValueError as e:
        raise AdmissionError(f"{where}.local_proxy_config.{e}") from None
    if rules.socket_managed and pgconf.spec_sets(spec, "unix_socket_directories"):
        raise AdmissionError(
            f"{where}.cluster: unix_socket_directories is managed by compute_ctl: the superuser "
            "is trusted only over its private socket directory (see --trust-superuser-on-loopback)"
        )
    conf = _render_conf(spec, rules, where=where)
    return Admitted(
        spec=spec, desired=desired, storage=storage, conf=conf, hash=spec_mod.spec_hash(spec)
    )


def _check_ids(spec: spec_mod.ComputeSpec, *, where: str) -> None:
    for name in _CONF_IDS:
        value = getattr(spec, name)
        if value is not None and not _ID_RE.fullmatch(value):
            raise AdmissionError(
                f"{where}.{name}: {value!r} is not a valid id (letters, digits and _.:- only, "
                "at most 128 characters)"
            )


def _check_ranges(spec: spec_mod.ComputeSpec, *, where: str) -> None:
    for name, low, high in _RANGES:
        value = getattr(spec, name)
        if value is not None and not low <= value <= high:
            raise AdmissionError(f"{where}.{name}: {value} is out of range [{low}, {high}]")


def _check_remote_extensions(spec: spec_mod.ComputeSpec, *, where: str) -> None:
    if spec.remote_extensions is not None:
        _parse(
            remote_ext_names.RemoteExtSpec,
            spec.remote_extensions,
            where=f"{where}.remote_extensions",
        )


def _check_catalog(desired: desired_mod.Desired, rules: Rules, *, where: str) -> None:
    roles = {r.name for r in desired.roles}
    owners_allowed = roles | {desired.privileged_role}
    if rules.superuser is not None:
        owners_allowed.add(rules.superuser)
        if rules.superuser in roles:
            raise AdmissionError(
                f"{where}: role {rules.superuser!r} is the superuser compute_ctl runs as (-C)"
            )
    for database in desired.databases:
        if database.owner not in owners_allowed:
            raise AdmissionError(
                f"{where}: database {database.name!r}: owner {database.owner!r} is not a role "
                "of the spec"
            )
    for delta in desired.deltas:
        is_role = delta.action.endswith("_role")
        if is_role and rules.superuser is not None and delta.name == rules.superuser:
            raise AdmissionError(
                f"{where}: delta {delta.action} names the superuser compute_ctl runs as "
                f"{delta.name!r}"
            )
        if not is_role and delta.name == rules.maintenance_db:
            raise AdmissionError(
                f"{where}: delta {delta.action} names database {delta.name!r}, which "
                "compute_ctl works through (-C)"
            )


def _storage(spec: spec_mod.ComputeSpec) -> StorageTarget:
    if not spec.has_neon_storage() and spec.primary_connstring is None:
        return StorageTarget(kind="local")
    # Imported here so that a local-mode start never loads the storage package (libpq).
    from compute_ctl.compute import storage
    from compute_ctl.compute.storage import checks as storage_checks

    storage.check_spec(spec)
    if spec.primary_connstring is not None:
        return StorageTarget(kind="primary")
    return StorageTarget(kind="neon", neon=storage_checks.neon_target(spec))


def _check_port(spec: spec_mod.ComputeSpec, local_port: int | None, *, where: str) -> None:
    raw = spec.cluster.setting("port")
    if raw is None:
        return
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise AdmissionError(f"{where}.cluster.settings: port {raw!r} is not a port number")
    if local_port is not None and int(raw) != local_port:
        raise AdmissionError(
            f"{where}.cluster.settings: port {raw} disagrees with -C/--connstr port {local_port}"
        )


def _render_conf(spec: spec_mod.ComputeSpec, rules: Rules, *, where: str) -> str:
    for index, option in enumerate(spec.cluster.settings or []):
        field = f"{where}.cluster.settings.{index}"
        if option.value is None:
            raise AdmissionError(f"{field}: setting {option.name!r} has no value")
        try:
            pgconf.render_option(option)
        except errors.ConfigError as e:
            raise AdmissionError(f"{field}: {e}") from e
    storage_lines: list[str] = []
    if spec.has_neon_storage():
        from compute_ctl.compute import storage

        storage_lines = storage.neon_conf_lines(spec)
        for line in storage_lines:
            if _UNSAFE_CONF_CHARS.search(line):
                # Never echo the value: a pageserver URL may carry a password.
                setting = line.split("=", 1)[0]
                raise AdmissionError(
                    f"{where}: the storage fields give {setting} a line break or a control "
                    "character"
                )
    context = pgconf.ConfContext(
        privileged_role=rules.privileged_role,
        internal_port=rules.internal_port,
        storage_lines=storage_lines,
        local_port=rules.local_port,
        socket_dir=rules.socket_dir,
        overcommit_strict=rules.overcommit_strict,
        tls=rules.tls and tls.requested(spec),
    )
    return pgconf.render_postgresql_conf(spec, context)
