"""Turn a pydantic JSON Schema into a Kubernetes *structural* OpenAPI v3 schema.

Kubernetes accepts a CRD schema only if it is structural: every node has a ``type``
(unless it preserves unknown fields), no ``$ref``, no ``anyOf``/``oneOf`` carrying types,
and ``nullable`` instead of a ``null`` type. pydantic emits ``$defs``/``$ref``,
``anyOf: [X, {type: null}]`` for optional fields, ``additionalProperties: true`` for free
dicts, titles and defaults. This module rewrites one into the other, and refuses
(``SchemaError``, naming the path) any construct it cannot express faithfully, so a new
model field can never silently produce a schema the API server rejects.

Where a model accepts more than its JSON Schema says (a ``mode="before"`` validator that
takes a string *or* an object), the caller passes an override for that field: the field
then keeps unknown content (``x-kubernetes-preserve-unknown-fields``) with a description,
and pydantic remains the validator. Defaults are dropped: the API server would otherwise
write them into stored objects, and pydantic applies the same defaults when it parses.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Overrides", "SchemaError", "structural"]

Overrides = Mapping[tuple[str, str], Mapping[str, Any]]
"""``(ModelTitle, field_name) -> replacement schema`` for fields pydantic cannot express."""

_DROPPED = frozenset({"title", "default", "examples", "$defs"})
_KEPT = frozenset(
    {
        "type",
        "format",
        "description",
        "enum",
        "required",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
    }
)


class SchemaError(ValueError):
    """A JSON Schema construct with no faithful structural equivalent."""


def structural(
    schema: Mapping[str, Any],
    *,
    overrides: Overrides | None = None,
) -> dict[str, Any]:
    """Convert a top-level pydantic ``model_json_schema()`` result."""
    converter = _Converter(defs=schema.get("$defs", {}), overrides=overrides or {})
    out = converter.node(schema, path="", model=None)
    stale = set(converter.overrides) - converter.used
    if stale:
        raise SchemaError(f"overrides for fields that do not exist: {sorted(stale)}")
    return out


class _Converter:
    def __init__(self, *, defs: Mapping[str, Any], overrides: Overrides) -> None:
        self.defs = defs
        self.overrides = overrides
        self.used: set[tuple[str, str]] = set()

    def node(self, raw: Mapping[str, Any], *, path: str, model: str | None) -> dict[str, Any]:
        raw = self._resolve(raw, path=path)
        if "anyOf" in raw or "oneOf" in raw:
            raw = self._nullable(raw, path=path)
        if "allOf" in raw or "not" in raw or "const" in raw:
            raise SchemaError(f"{path or '<root>'}: unsupported construct {sorted(raw)}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _KEPT or key.startswith("x-kubernetes-"):
                out[key] = value
            elif key not in _DROPPED and key not in (
                "properties",
                "items",
                "additionalProperties",
                "nullable",
            ):
                raise SchemaError(f"{path or '<root>'}: unsupported keyword {key!r}")
        if raw.get("nullable"):
            out["nullable"] = True
        title = raw.get("title") if "properties" in raw else model
        if "properties" in raw:
            out["properties"] = {
                name: self._field(prop, path=f"{path}.{name}", model=title, name=name)
                for name, prop in raw["properties"].items()
            }
            out.setdefault("type", "object")
        if "items" in raw:
            out["items"] = self.node(raw["items"], path=f"{path}[]", model=model)
        extra = raw.get("additionalProperties")
        if extra is True or extra == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, Mapping):
            if "properties" in raw:
                raise SchemaError(f"{path}: properties and additionalProperties together")
            out["additionalProperties"] = self.node(extra, path=f"{path}.*", model=model)
        if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            raise SchemaError(f"{path or '<root>'}: a node without a type")
        return out

    def _field(
        self, raw: Mapping[str, Any], *, path: str, model: str | None, name: str
    ) -> dict[str, Any]:
        key = (model or "", name)
        if key in self.overrides:
            self.used.add(key)
            return dict(self.overrides[key])
        return self.node(raw, path=path, model=model)

    def _resolve(self, raw: Mapping[str, Any], *, path: str) -> Mapping[str, Any]:
        ref = raw.get("$ref")
        if ref is None:
            return raw
        prefix = "#/$defs/"
        if not isinstance(ref, str) or not ref.startswith(prefix):
            raise SchemaError(f"{path}: unsupported $ref {ref!r}")
        target = self.defs.get(ref[len(prefix) :])
        if target is None:
            raise SchemaError(f"{path}: dangling $ref {ref!r}")
        # The model's title names it (overrides are keyed by it): the field's title must not
        # replace it.
        siblings = {k: v for k, v in raw.items() if k not in ("$ref", "title")}
        # A description on the referencing field wins over the model's docstring.
        return {**target, **siblings}

    def _nullable(self, raw: Mapping[str, Any], *, path: str) -> Mapping[str, Any]:
        """``anyOf: [X, {type: null}]`` is ``X`` + ``nullable``; any other union is refused."""
        variants = raw.get("anyOf") or raw.get("oneOf") or []
        rest = [v for v in variants if v != {"type": "null"}]
        if len(rest) != 1 or len(rest) == len(variants):
            raise SchemaError(f"{path}: a union of {len(rest)} types cannot be structural")
        merged = {k: v for k, v in raw.items() if k not in ("anyOf", "oneOf", "title")}
        inner = self._resolve(rest[0], path=path)
        return {**inner, **merged, "nullable": True}
