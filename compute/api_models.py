"""The HTTP API's wire contract: one module of models, as Neon shares its ``compute_api``.

The HTTP layer renders its bodies with these models and the operator's client parses
compute_ctl's answers with them, so the two cannot drift; the OpenAPI document's
components are generated from them (``compute.http.openapi``, checked by
``tests/http/test_openapi.py``). The status values are ``state.ComputeStatus`` (Neon's
snake_case names), re-exported here as the one enum both sides use.

- ``ComputeStatusResponse``: ``GET /status`` (Neon's fields first, then ours); clients
  ignore fields they do not know.
- ``ConfigureRequest``: ``POST /configure``; ``DryRunResponse`` its ``?dry_run=true`` answer.
- ``TerminateResponse``: ``POST /terminate``.
- ``PromoteRequest``: ``POST /promote``; ``PromoteResponse`` its 200, ``PromoteFailed`` its
  500 (Neon's ``PromoteState``, tagged by ``status``).
- ``ErrorBody``: every error, ``{"error": "..."}``.
- ``GrantsRequest``/``ExtensionRequest`` and their answers: the internal port's bodies.
- ``LfcPrewarmState``/``LfcOffloadState``: ``GET /lfc/prewarm`` and ``GET /lfc/offload``
  (Neon's tagged unions, one model each: fields of other tags are left out of the body).

Pure models: no aiohttp, no kopf, no I/O; the operator imports this module.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pydantic

from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute import state as state_mod

__all__ = [
    "ComputeStatus",
    "ComputeStatusResponse",
    "ConfigureRequest",
    "DryRunResponse",
    "ErrorBody",
    "ExtensionInstallResponse",
    "ExtensionRequest",
    "GrantsRequest",
    "GrantsResponse",
    "LfcOffloadState",
    "LfcPrewarmState",
    "MigrationsStatus",
    "PlannedOperation",
    "Privilege",
    "PromoteFailed",
    "PromoteRequest",
    "PromoteResponse",
    "TerminateResponse",
]

ComputeStatus = state_mod.ComputeStatus


class Privilege(enum.StrEnum):
    """Neon's ``compute_api::privilege::Privilege``."""

    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"
    REFERENCES = "REFERENCES"
    TRIGGER = "TRIGGER"
    USAGE = "USAGE"
    CREATE = "CREATE"
    CONNECT = "CONNECT"
    TEMPORARY = "TEMPORARY"
    EXECUTE = "EXECUTE"


class _Body(pydantic.BaseModel):
    """A body we render: every field always present, unknown fields ignored on parse."""

    # Rendered bodies carry every field, so the schema marks them all required.
    model_config = pydantic.ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_serialization_defaults_required=True,
        json_schema_mode_override="serialization",
    )


class MigrationsStatus(_Body):
    """Where the start-time migrations are: ``applied`` of ``latest`` are in the cluster;
    ``failed_id`` failed (retried at the next start)."""

    state: Literal["running", "done", "failed"]
    applied: int | None = None
    latest: int | None = None
    failed_id: int | None = None
    error: str | None = None


class ComputeStatusResponse(_Body):
    """``GET /status``: Neon's ``ComputeStatusResponse`` fields, then ours."""

    start_time: str | None = pydantic.Field(default=None, description="RFC 3339, UTC")
    tenant: str | None = None
    timeline: str | None = None
    status: ComputeStatus
    last_active: str | None = pydantic.Field(default=None, description="RFC 3339, UTC")
    error: str | None = None
    desired_generation: int = pydantic.Field(default=0, ge=0)
    applied_generation: int = pydantic.Field(default=0, ge=0)
    desired_spec_hash: str = ""
    applied_spec_hash: str = ""
    pending_restart: list[str] = pydantic.Field(default_factory=list)
    mode: Literal["primary", "replica", "static"] | None = None
    pending_error: str | None = pydantic.Field(
        default=None,
        description="Beyond Neon: why the desired spec is not applied yet; it is retried "
        "meanwhile, and the compute keeps running on its last applied spec.",
    )
    migrations: MigrationsStatus | None = pydantic.Field(
        default=None,
        description="Beyond Neon: the start-time database migrations (null until a Primary "
        "start with catalog updates runs them; Neon runs them unobserved)",
    )

    @property
    def serving(self) -> bool:
        """postgres serves: it was configured once and runs or reconfigures."""
        return self.status in _SERVING and self.applied_generation > 0


_SERVING = frozenset(
    {ComputeStatus.RUNNING, ComputeStatus.CONFIGURATION_PENDING, ComputeStatus.CONFIGURATION}
)


class ConfigureRequest(pydantic.BaseModel):
    """Neon's ``ComputeConfig`` as ``/configure`` takes it. Neon requires
    ``compute_ctl_config`` too; here it is optional. Either way it is ignored: JWKS and
    TLS are fixed at start."""

    model_config = pydantic.ConfigDict(extra="ignore", title="ConfigureRequest")

    spec: spec_mod.ComputeSpec
    compute_ctl_config: spec_mod.ComputeCtlConfig | None = None

    def config(self) -> spec_mod.ComputeConfig:
        return spec_mod.ComputeConfig(
            spec=self.spec,
            compute_ctl_config=self.compute_ctl_config or spec_mod.ComputeCtlConfig(),
        )


class PlannedOperation(_Body):
    """One operation of a plan (``catalog.plan.Operation.to_json``)."""

    phase: str
    database: str | None
    sql: str = pydantic.Field(description="secrets redacted")
    comment: str


class DryRunResponse(_Body):
    """``/configure?dry_run=true``: the plan, secrets redacted."""

    plan: list[PlannedOperation]


class TerminateResponse(_Body):
    """``POST /terminate``: the last LSN (``null`` without one, e.g. a replica)."""

    lsn: str | None = None


class PromoteRequest(pydantic.BaseModel):
    """Neon's ``PromoteConfig``: the new primary's spec and the old primary's last flush
    LSN (its ``/terminate?mode=immediate`` answer)."""

    model_config = pydantic.ConfigDict(extra="ignore", title="PromoteRequest")

    spec: spec_mod.ComputeSpec
    wal_flush_lsn: str = pydantic.Field(
        pattern=r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", examples=["0/28F10D8"]
    )


class PromoteResponse(_Body):
    """``POST /promote`` 200: ``{"status": "completed", ...}``, the steps' milliseconds."""

    status: Literal["completed"] = "completed"
    lsn_wait_time_ms: int = pydantic.Field(ge=0)
    pg_promote_time_ms: int = pydantic.Field(ge=0)
    reconfigure_time_ms: int = pydantic.Field(ge=0)


class PromoteFailed(_Body):
    """``POST /promote`` 500: ``{"status": "failed", "error": "..."}`` (an ``Error`` body
    with Neon's ``status`` tag)."""

    status: Literal["failed"] = "failed"
    error: str


class ErrorBody(_Body):
    """Every error answer."""

    model_config = pydantic.ConfigDict(
        extra="ignore",
        frozen=True,
        title="Error",
        json_schema_serialization_defaults_required=True,
        json_schema_mode_override="serialization",
    )

    error: str


# --- the internal port's bodies (Neon's SetRoleGrantsRequest, ExtensionInstallRequest) --

# PostgreSQL identifiers: at most NAMEDATALEN - 1 bytes, never NUL.
Ident = Annotated[
    str,
    pydantic.Strict(),
    pydantic.StringConstraints(min_length=1, max_length=63, pattern=r"^[^\x00]+$"),
]
Version = Annotated[
    str,
    pydantic.Strict(),
    pydantic.StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]+$"),
]


class _Request(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)


class GrantsRequest(_Request):
    database: Ident
    schema_name: Ident = pydantic.Field(alias="schema")
    privileges: list[Privilege]
    role: Ident


class GrantsResponse(_Body):
    """201: the request, echoed (Neon)."""

    database: str
    schema_name: str = pydantic.Field(alias="schema")
    role: str
    privileges: list[Privilege]


class ExtensionRequest(_Request):
    extension: Ident
    database: Ident
    version: Version


class ExtensionInstallResponse(_Body):
    extension: str
    version: str


# --- cache prewarm and offload (Neon's ``LfcPrewarmState``, ``LfcOffloadState``) --------


class _LfcState(pydantic.BaseModel):
    """A tagged union as one model: ``status`` is the tag; only the fields of that tag
    are set, and unset ones are left out of the body (``model_dump(exclude_none=True)``)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    def body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class LfcPrewarmState(_LfcState):
    """``GET /lfc/prewarm``: ``completed`` carries the counts and the step timings."""

    status: Literal["not_prewarmed", "prewarming", "completed", "failed", "skipped", "cancelled"]
    error: str | None = None
    total: int | None = None
    prewarmed: int | None = None
    skipped: int | None = None
    state_download_time_ms: int | None = None
    uncompress_time_ms: int | None = None
    prewarm_time_ms: int | None = None


class LfcOffloadState(_LfcState):
    """``GET /lfc/offload``: ``completed`` carries the step timings."""

    status: Literal["not_offloaded", "offloading", "completed", "failed", "skipped"]
    error: str | None = None
    state_query_time_ms: int | None = None
    compress_time_ms: int | None = None
    state_upload_time_ms: int | None = None
