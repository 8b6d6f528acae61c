"""pydantic JSON Schema -> structural schema: what is rewritten and what is refused."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from compute_ctl.operator import schema


class Leaf(pydantic.BaseModel):
    """A leaf."""

    name: str
    size: int | None = 3


class Tree(pydantic.BaseModel):
    leaf: Leaf
    maybe: Leaf | None = None
    leaves: list[Leaf] = []
    labels: dict[str, str] = {}
    free: dict[str, Any] | None = None


def test_refs_are_inlined_and_optionals_become_nullable() -> None:
    out = schema.structural(Tree.model_json_schema())
    assert out["required"] == ["leaf"]
    leaf = out["properties"]["leaf"]
    assert leaf["type"] == "object"
    assert leaf["description"] == "A leaf."
    assert leaf["properties"]["size"] == {"type": "integer", "nullable": True}
    assert out["properties"]["maybe"]["nullable"] is True
    assert out["properties"]["maybe"]["properties"]["name"] == {"type": "string"}
    assert out["properties"]["leaves"]["items"]["required"] == ["name"]
    assert out["properties"]["labels"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    free = out["properties"]["free"]
    assert free["x-kubernetes-preserve-unknown-fields"] is True
    assert "additionalProperties" not in free
    text = repr(out)
    for banned in ("$ref", "anyOf", "title", "default", "$defs"):
        assert banned not in text


def test_real_unions_are_refused() -> None:
    class Either(pydantic.BaseModel):
        value: int | str

    with pytest.raises(schema.SchemaError, match=r"\.value: a union of 2 types"):
        schema.structural(Either.model_json_schema())


def test_an_override_replaces_a_field_by_model_and_name() -> None:
    class Either(pydantic.BaseModel):
        value: int | str

    override = {"x-kubernetes-preserve-unknown-fields": True, "description": "int or str"}
    out = schema.structural(Either.model_json_schema(), overrides={("Either", "value"): override})
    assert out["properties"]["value"] == override


def test_an_override_for_a_missing_field_is_an_error() -> None:
    with pytest.raises(schema.SchemaError, match="do not exist"):
        schema.structural(Leaf.model_json_schema(), overrides={("Leaf", "colour"): {}})


def test_overrides_apply_inside_nullable_references() -> None:
    class Either(pydantic.BaseModel):
        value: int | str

    class Holder(pydantic.BaseModel):
        inner: Either | None = None

    override = {"x-kubernetes-preserve-unknown-fields": True}
    out = schema.structural(Holder.model_json_schema(), overrides={("Either", "value"): override})
    assert out["properties"]["inner"]["properties"]["value"] == override
