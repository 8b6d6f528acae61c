"""The wire contract: Neon's ``ComputeConfig`` and ``ComputeSpec`` as pydantic models.

These models validate the config file, the control plane's reply, ``POST /configure``
bodies and (through the generated CRD schema) ``ComputeSpec`` resources. They follow
``libs/compute_api/src/spec.rs``: the same required fields and defaults, unknown
fields ignored, values serialised back to the same JSON. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from typing import Annotated, Any, Literal

import pydantic

__all__ = [
    "AuditLogLevel",
    "Cluster",
    "ComputeConfig",
    "ComputeCtlConfig",
    "ComputeFeature",
    "ComputeMode",
    "ComputeSpec",
    "Database",
    "DeltaOp",
    "GenericOption",
    "Jwks",
    "PageserverConnectionInfo",
    "PageserverInfo",
    "PageserverShardInfo",
    "Role",
    "TlsConfig",
    "format_validation_error",
    "lsn_to_int",
    "parse_lsn",
    "spec_hash",
]

_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def parse_lsn(value: str) -> str:
    """Validate a ``hi/lo`` hex LSN and return it upper-cased, as PostgreSQL prints it."""
    if not _LSN_RE.match(value):
        raise ValueError(f"invalid LSN {value!r}: expected hex 'X/Y'")
    hi, lo = value.split("/")
    return f"{int(hi, 16):X}/{int(lo, 16):X}"


def lsn_to_int(value: str) -> int:
    hi, lo = parse_lsn(value).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class _Model(pydantic.BaseModel):
    """Neon's serde structs ignore unknown fields; so do we."""

    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)


class GenericOption(_Model):
    """A setting or a role/database option: ``name``, optional ``value``, ``vartype``."""

    name: str
    value: str | None = None
    vartype: str

    @pydantic.field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # Neon's value is a String; hand-written specs often carry numbers or booleans.
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, int | float):
            return str(value)
        return value


class Role(_Model):
    name: str
    encrypted_password: str | None = pydantic.Field(default=None, repr=False)
    options: list[GenericOption] | None = None


class Database(_Model):
    name: str
    owner: str
    options: list[GenericOption] | None = None
    # Output-only in Neon (filled by /dbs_and_roles); accepted and ignored on input.
    restrict_conn: bool = False
    invalid: bool = False


class DeltaOp(_Model):
    """A one-shot catalog change. Neon ignores unknown actions; we keep them, and ignore them."""

    action: str
    name: str
    new_name: str | None = None


class Cluster(_Model):
    cluster_id: str | None = None
    name: str | None = None
    state: str | None = None
    roles: list[Role]
    databases: list[Database]
    postgresql_conf: str | None = None
    settings: list[GenericOption] | None = None

    def setting(self, name: str) -> str | None:
        for option in self.settings or []:
            if option.name == name:
                return option.value
        return None


class ComputeFeature(enum.StrEnum):
    ACTIVITY_MONITOR_EXPERIMENTAL = "activity_monitor_experimental"
    TLS_EXPERIMENTAL = "tls_experimental"
    UNKNOWN_FEATURE = "UnknownFeature"

    @classmethod
    def _missing_(cls, value: object) -> ComputeFeature | None:
        # serde's #[serde(other)]: any unknown *name*; a non-string stays an error.
        return cls.UNKNOWN_FEATURE if isinstance(value, str) else None


class AuditLogLevel(enum.StrEnum):
    DISABLED = "Disabled"
    LOG = "Log"
    BASE = "Base"
    HIPAA = "Hipaa"
    EXTENDED = "Extended"
    FULL = "Full"


class ComputeMode(_Model):
    """``"Primary"``, ``{"Static": "X/Y"}`` or ``"Replica"`` (serde's external tagging)."""

    kind: Literal["Primary", "Static", "Replica"] = "Primary"
    lsn: str | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_wire(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("Primary", "Replica"):
                raise ValueError(f"unknown compute mode {value!r}")
            return {"kind": value}
        if isinstance(value, dict) and set(value) == {"Static"}:
            return {"kind": "Static", "lsn": parse_lsn(str(value["Static"]))}
        if isinstance(value, dict) and ("kind" in value or not value):
            return value  # already ours, or {} from the default factory (Primary)
        raise ValueError('mode must be "Primary", "Replica" or {"Static": "X/Y"}')

    @pydantic.model_serializer(mode="plain")
    def _to_wire(self) -> str | dict[str, str]:
        if self.kind == "Static":
            return {"Static": self.lsn or "0/0"}
        return self.kind

    @property
    def type_name(self) -> str:
        """The lower-case name Neon writes to ``neon.compute_mode``."""
        return self.kind.lower()


class PageserverInfo(_Model):
    id: int | None = None
    libpq_url: str | None = None
    grpc_url: str | None = None


class PageserverShardInfo(_Model):
    pageservers: list[PageserverInfo]


class PageserverConnectionInfo(_Model):
    shard_count: int = 0
    stripe_size: int | None = None
    shards: dict[str, PageserverShardInfo] = pydantic.Field(default_factory=dict)
    prefer_protocol: Literal["libpq", "grpc"] = "libpq"


class ComputeSpec(_Model):
    """Neon's ``ComputeSpec``: ``format_version``, ``cluster`` and ``suspend_timeout_seconds``
    are required; everything else has Neon's default."""

    format_version: float
    operation_uuid: str | None = None
    features: list[ComputeFeature] = pydantic.Field(default_factory=list)
    swap_size_bytes: int | None = None
    disk_quota_bytes: int | None = None
    disable_lfc_resizing: bool | None = None
    cluster: Cluster
    delta_operations: list[DeltaOp] | None = None
    skip_pg_catalog_updates: bool = False
    tenant_id: str | None = None
    timeline_id: str | None = None
    pageserver_connection_info: PageserverConnectionInfo | None = None
    pageserver_connstring: str | None = None
    shard_stripe_size: int | None = None
    project_id: str | None = None
    branch_id: str | None = None
    endpoint_id: str | None = None
    safekeepers_generation: int | None = None
    safekeeper_connstrings: list[str] = pydantic.Field(default_factory=list)
    mode: ComputeMode = pydantic.Field(default_factory=ComputeMode)
    storage_auth_token: str | None = pydantic.Field(default=None, repr=False)
    remote_extensions: dict[str, Any] | None = None
    pgbouncer_settings: dict[str, str] | None = None
    local_proxy_config: dict[str, Any] | None = None
    reconfigure_concurrency: int = 1
    drop_subscriptions_before_start: bool = False
    audit_log_level: AuditLogLevel = AuditLogLevel.DISABLED
    logs_export_host: str | None = None
    endpoint_storage_addr: str | None = None
    endpoint_storage_token: str | None = pydantic.Field(default=None, repr=False)
    autoprewarm: bool = False
    offload_lfc_interval_seconds: int | None = None
    suspend_timeout_seconds: int
    # Beyond Neon: start as a hot standby of a vanilla PostgreSQL primary
    # (``pg_basebackup`` from this libpq URL) instead of from Neon storage.
    primary_connstring: str | None = None

    @pydantic.field_validator("tenant_id", "timeline_id")
    @classmethod
    def _hex_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError("must be 32 lower-case hex digits")
        return value

    @pydantic.field_validator("reconfigure_concurrency")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    def has_neon_storage(self) -> bool:
        """Whether the spec names a pageserver or safekeepers (else: local mode)."""
        return bool(
            self.pageserver_connection_info
            or self.pageserver_connstring
            or self.safekeeper_connstrings
            or self.cluster.setting("neon.pageserver_connstring")
        )

    def port(self) -> int | None:
        value = self.cluster.setting("port")
        return int(value) if value is not None else None


class Jwks(_Model):
    keys: list[dict[str, Any]] = pydantic.Field(default_factory=list)


class TlsConfig(_Model):
    key_path: str
    cert_path: str


class ComputeCtlConfig(_Model):
    jwks: Jwks = pydantic.Field(default_factory=Jwks)
    tls: TlsConfig | None = None


class ComputeConfig(_Model):
    """The config file, the control plane's reply and the ``/configure`` body."""

    spec: ComputeSpec | None = None
    compute_ctl_config: ComputeCtlConfig = pydantic.Field(default_factory=ComputeCtlConfig)


def spec_hash(spec: ComputeSpec | None) -> str:
    """A stable content hash of a spec: the ETag of ``/status`` and the resource's status."""
    if spec is None:
        return ""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def format_validation_error(error: pydantic.ValidationError) -> str:
    """One line naming each failing field by its path, e.g. ``spec.cluster.roles.0.name``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


# Keep a handy alias for annotations of already-parsed JSON bodies.
JsonObject = Annotated[dict[str, Any], "json object"]
