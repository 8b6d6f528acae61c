"""Test helpers for CRD schemas: a structural-schema linter and a jsonschema validator.

``structural_problems`` approximates the API server's structural-schema rules (the real
server checks them in the apiserver tier); ``validator`` turns an OpenAPI v3 CRD schema
into a JSON Schema (``nullable`` -> a ``null`` type, ``x-kubernetes-*`` dropped) so test
objects can be checked the way the server would check their types and required fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from compute_ctl.operator import crd

__all__ = ["crd_schema", "structural_problems", "validator"]

_COMBINATORS = ("$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs")


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def structural_problems(node: Mapping[str, Any], path: str = "") -> list[str]:
    problems: list[str] = []
    where = path or "<root>"
    for key in _COMBINATORS:
        if key in node:
            problems.append(f"{where}: {key} is not allowed")
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{where}: no type")
    if "default" in node:
        problems.append(f"{where}: a default would be written into stored objects")
    extra = node.get("additionalProperties")
    if extra is not None:
        if "properties" in node:
            problems.append(f"{where}: properties and additionalProperties together")
        if not isinstance(extra, Mapping):
            problems.append(f"{where}: additionalProperties must be a schema")
        else:
            problems += structural_problems(extra, f"{path}.*")
    if node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        required = set(node.get("items", {}).get("required", []))
        if not keys or not set(keys) <= required:
            problems.append(f"{where}: list-map keys must be required item fields")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def _to_jsonschema(node: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: _to_jsonschema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _to_jsonschema(value)
        else:
            out[key] = value
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def validator(schema: Mapping[str, Any] | None = None) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_to_jsonschema(schema or crd_schema()))
