"""The OpenAPI document is true: every route documented, nothing documented that is not served."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute.http import app as app_mod
from compute_ctl.compute.http import openapi
from tests.support import nodedouble

METHODS = {"get", "post", "put", "patch", "delete"}


def _served(*, external: bool) -> set[tuple[str, str]]:
    node = nodedouble.offline()
    metrics = metrics_mod.Metrics(build_tag="t", state=node.state)
    application: web.Application = app_mod.build_app(node, metrics=metrics, external=external)
    served = set()
    for route in application.router.routes():
        if route.method in ("HEAD", "*"):
            continue  # aiohttp adds HEAD to every GET; "*" is the 404/405 catch-all
        info = route.resource.get_info() if route.resource is not None else {}
        # A dynamic route has a "formatter" (``/extension_server/{filename}``), no "path".
        served.add((route.method.lower(), str(info.get("path") or info.get("formatter", ""))))
    return served


def _documented(*, external: bool) -> set[tuple[str, str]]:
    document = openapi.load()
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS and not (external and operation.get("x-internal-only"))
    }


def test_every_external_route_is_documented_and_vice_versa() -> None:
    assert _served(external=True) == _documented(external=True)


def test_every_internal_route_is_documented_and_vice_versa() -> None:
    assert _served(external=False) == _documented(external=False)


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = openapi.load()
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_open_operations_are_exactly_the_open_paths_and_internal_ones() -> None:
    open_ops = {path for _, path, op in _operations() if op["security"] == []}
    internal_only = {path for _, path, op in _operations() if op.get("x-internal-only")}
    assert open_ops == set(app_mod.OPEN_PATHS) | internal_only


def test_every_operation_documents_json_errors_and_404_405() -> None:
    for method, path, operation in _operations():
        responses = operation["responses"]
        assert {"404", "405"} <= set(responses), (method, path)
        for code, response in responses.items():
            if int(code) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)


def test_model_schemas_match_the_pydantic_models() -> None:
    """Run ``python -m compute_ctl.compute.http.openapi`` after changing a model."""
    components = openapi.load()["components"]["schemas"]
    for name, schema in openapi.generated_schemas().items():
        assert components.get(name) == schema, name


def test_every_reference_resolves() -> None:
    document = openapi.load()
    schemas = document["components"]["schemas"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/components/schemas/"), ref
                assert ref.rsplit("/", 1)[1] in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
