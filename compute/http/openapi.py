"""The OpenAPI document of the HTTP API (``openapi.json``, shipped as package data).

The paths are written by hand in ``openapi.json``; the bodies' schemas are pydantic's
own: the wire contract (``compute.api_models``: status, configure, terminate, promote, error,
grants, extensions, cache prewarm and offload), ``ComputeSpec`` and friends, the failpoints body,
with the few wire forms pydantic cannot see patched in (Neon's ``ComputeMode`` union,
open-ended feature names). ``python -m compute_ctl.compute.http.openapi`` rewrites those
generated components in place after a model changes; ``tests/http/test_openapi.py``
fails until it has been run, and checks every route of both apps is documented.
"""

from __future__ import annotations

import importlib.resources
import json
import sys
from pathlib import Path
from typing import Any

import pydantic

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.compute.http.routes import failpoints

__all__ = ["generated_schemas", "load", "main"]

_FILE = "openapi.json"
_REF = "#/components/schemas/{model}"

# Neon's serde forms of spec types, which pydantic's validators accept but its schema
# generator cannot describe.
_WIRE_OVERRIDES: dict[str, Any] = {
    "ComputeMode": {
        "title": "ComputeMode",
        "description": '"Primary", "Replica" or {"Static": "<LSN X/Y>"} (serde external tagging)',
        "oneOf": [
            {"type": "string", "enum": ["Primary", "Replica"]},
            {
                "type": "object",
                "required": ["Static"],
                "properties": {
                    "Static": {"type": "string", "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"}
                },
                "additionalProperties": False,
            },
            {
                "description": "also accepted: compute_ctl's own form of the same value",
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["Primary", "Static", "Replica"]},
                    "lsn": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
            },
        ],
    },
    "ComputeFeature": {
        "title": "ComputeFeature",
        "description": "A feature flag; unknown names are accepted and ignored, as in Neon.",
        "type": "string",
        "examples": [f.value for f in spec_mod.ComputeFeature],
    },
}


def load() -> dict[str, Any]:
    """The shipped document."""
    text = importlib.resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _schemas_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    defs: dict[str, Any] = schema.pop("$defs", {})
    defs[str(model.model_config.get("title") or model.__name__)] = schema
    return defs


def generated_schemas() -> dict[str, Any]:
    """The components generated from the pydantic models, wire overrides applied."""
    schemas: dict[str, Any] = {}
    for model in (
        spec_mod.ComputeSpec,
        spec_mod.ComputeCtlConfig,
        api_models.ComputeStatusResponse,
        api_models.ConfigureRequest,
        api_models.DryRunResponse,
        api_models.TerminateResponse,
        api_models.PromoteRequest,
        api_models.PromoteResponse,
        api_models.PromoteFailed,
        api_models.ErrorBody,
        api_models.GrantsRequest,
        api_models.ExtensionRequest,
        api_models.ExtensionInstallResponse,
        api_models.LfcPrewarmState,
        api_models.LfcOffloadState,
        failpoints.FailpointConfig,
    ):
        schemas.update(_schemas_of(model))
    schemas.update(_WIRE_OVERRIDES)
    # GenericOption.value is a string on the wire, but hand-written specs carry numbers
    # and booleans, which the model turns into strings ("on"/"off" for booleans).
    schemas["GenericOption"]["properties"]["value"]["anyOf"] = [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
    return dict(sorted(schemas.items()))


def main() -> int:
    path = Path(__file__).with_name(_FILE)
    document = json.loads(path.read_text(encoding="utf-8"))
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(generated_schemas())
    document["components"]["schemas"] = dict(sorted(components.items()))
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
