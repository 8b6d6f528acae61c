"""The autoscaler-agent <-> vm-monitor wire format, protocol v1.0, byte for byte.

The two directions are framed differently (Neon's ``libs/vm_monitor/src/protocol.rs``):

- agent -> monitor: an adjacently tagged envelope
  ``{"content": {...}, "type": "<Name>", "id": <uint64>}``; ``content`` is required even
  when empty, unknown extra keys are ignored.
- monitor -> agent: flat and internally tagged, ``{"type": "<Name>", <fields>, "id": <n>}``,
  in exactly that key order, compact, with ``DownscaleResult``'s ``Ok``/``Status`` capitalised.

The handshake precedes both: the agent sends ``{"min": 1, "max": 1}`` and we answer
``{"version": 1}`` or ``{"error": "..."}``.

This module is pure: models, parsing and rendering. It does no I/O and makes no decision.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pydantic

__all__ = [
    "MAX_VERSION",
    "MIN_VERSION",
    "Allocation",
    "DownscaleRequest",
    "DownscaleResult",
    "HealthCheck",
    "HealthCheckEcho",
    "Inbound",
    "InternalError",
    "InternalErrorReport",
    "InvalidFrame",
    "InvalidMessage",
    "InvalidMessageReport",
    "Outbound",
    "UpscaleConfirmation",
    "UpscaleNotification",
    "UpscaleRequest",
    "VersionRange",
    "encode",
    "error_response",
    "negotiate",
    "parse_inbound",
    "parse_version_range",
    "version_response",
]

MIN_VERSION = 1
MAX_VERSION = 1

_U64_MAX = 2**64 - 1
# Upstream's ProtocolVersion is a u8; anything else fails to deserialize.
_Version = Annotated[int, pydantic.Field(ge=0, le=255, strict=True)]
_Id = Annotated[int, pydantic.Field(ge=0, le=_U64_MAX, strict=True)]


class _Wire(pydantic.BaseModel):
    """Inbound models: we do not own this schema, and upstream ignores unknown keys."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


# --- handshake ---------------------------------------------------------------------------


def version_str(version: int) -> str:
    """Upstream's Display for a protocol version."""
    if version == 0:
        return "<invalid: zero>"
    if version == 1:
        return "v1.0"
    # Upstream formats this case recursively (and would overflow its stack); we do not.
    return f"<unknown: {version}>"


class VersionRange(_Wire):
    """The agent's first frame: an inclusive range of protocol versions."""

    min: _Version
    max: _Version

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> VersionRange:
        if self.min > self.max:
            raise ValueError(
                f"min version = {version_str(self.min)} is greater than "
                f"max version = {version_str(self.max)}"
            )
        return self

    def __str__(self) -> str:
        if self.min == self.max:
            return version_str(self.max)
        return f"{version_str(self.min)} to {version_str(self.max)}"


OURS = VersionRange(min=MIN_VERSION, max=MAX_VERSION)


class InvalidFrame(Exception):
    """A text frame we could not read. ``id`` is the frame's own id when it had one, else 0."""

    def __init__(self, error: str, *, id: int = 0) -> None:
        super().__init__(error)
        self.error = error
        self.id = id


def parse_version_range(text: str) -> VersionRange:
    try:
        return VersionRange.model_validate_json(text)
    except pydantic.ValidationError as e:
        raise InvalidFrame(f"failed to deserialize protocol version range: {_describe(e)}") from e


def negotiate(agent: VersionRange) -> int | None:
    """The highest version both ranges hold, or ``None`` when they do not overlap."""
    if OURS.min > agent.max or OURS.max < agent.min:
        return None
    return min(OURS.max, agent.max)


class _VersionResponse(pydantic.BaseModel):
    version: int


class _ErrorResponse(pydantic.BaseModel):
    error: str


def version_response(version: int) -> str:
    return _VersionResponse(version=version).model_dump_json()


def error_response(agent: VersionRange | str) -> str:
    """The refusal: for a range, upstream's exact sentence; for a string, that text."""
    if isinstance(agent, VersionRange):
        text = f"Received protocol version range {agent} which does not overlap with {OURS}"
    else:
        text = agent
    return _ErrorResponse(error=text).model_dump_json()


# --- agent -> monitor ------------------------------------------------------------------------


class Allocation(_Wire):
    """Resources as the agent states them: vCPUs (ignored by the monitor) and bytes."""

    cpu: float
    mem: Annotated[int, pydantic.Field(ge=0, le=_U64_MAX, strict=True)]


class _Target(_Wire):
    target: Allocation


class _Granted(_Wire):
    granted: Allocation


class _Empty(_Wire):
    pass


class _Error(_Wire):
    error: str


class DownscaleRequest(_Wire):
    type: Literal["DownscaleRequest"]
    content: _Target
    id: _Id


class UpscaleNotification(_Wire):
    type: Literal["UpscaleNotification"]
    content: _Granted
    id: _Id


class HealthCheck(_Wire):
    type: Literal["HealthCheck"]
    content: _Empty
    id: _Id


class InvalidMessageReport(_Wire):
    """The agent could not use something we sent (``id`` is ours)."""

    type: Literal["InvalidMessage"]
    content: _Error
    id: _Id


class InternalErrorReport(_Wire):
    type: Literal["InternalError"]
    content: _Error
    id: _Id


Inbound = (
    DownscaleRequest
    | UpscaleNotification
    | HealthCheck
    | InvalidMessageReport
    | InternalErrorReport
)
_INBOUND: pydantic.TypeAdapter[Inbound] = pydantic.TypeAdapter(
    Annotated[Inbound, pydantic.Field(discriminator="type")]
)


def parse_inbound(text: str) -> Inbound:
    """One agent envelope; ``InvalidFrame`` (carrying the frame's id if any) otherwise."""
    try:
        return _INBOUND.validate_json(text)
    except pydantic.ValidationError as e:
        raise InvalidFrame(
            f"failed to deserialize text message: {_describe(e)}", id=_salvage_id(text)
        ) from e


def _salvage_id(text: str) -> int:
    """The id of a frame that failed to parse, so the agent can fail the pending call."""
    try:
        raw: Any = json.loads(text)
    except ValueError:
        return 0
    if not isinstance(raw, dict):
        return 0
    value = raw.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
        return value
    return 0


def _describe(error: pydantic.ValidationError) -> str:
    """pydantic's errors in one line, without the input echoed back."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


# --- monitor -> agent ------------------------------------------------------------------------
# Field order is the wire order: type, payload, id (serde's flatten of an internally tagged
# enum followed by the id).


class UpscaleRequest(pydantic.BaseModel):
    type: Literal["UpscaleRequest"] = "UpscaleRequest"
    id: int


class UpscaleConfirmation(pydantic.BaseModel):
    type: Literal["UpscaleConfirmation"] = "UpscaleConfirmation"
    id: int


class HealthCheckEcho(pydantic.BaseModel):
    type: Literal["HealthCheck"] = "HealthCheck"
    id: int


class DownscaleResult(pydantic.BaseModel):
    type: Literal["DownscaleResult"] = "DownscaleResult"
    # Capitalised on the wire since the vm-informant; the attribute names are the wire names.
    Ok: bool
    Status: str
    id: int


class InvalidMessage(pydantic.BaseModel):
    type: Literal["InvalidMessage"] = "InvalidMessage"
    error: str
    id: int


class InternalError(pydantic.BaseModel):
    type: Literal["InternalError"] = "InternalError"
    error: str
    id: int


Outbound = (
    UpscaleRequest
    | UpscaleConfirmation
    | HealthCheckEcho
    | DownscaleResult
    | InvalidMessage
    | InternalError
)


def encode(message: Outbound) -> str:
    """The exact text frame: compact JSON, keys in wire order, non-ASCII kept as UTF-8."""
    return message.model_dump_json()
