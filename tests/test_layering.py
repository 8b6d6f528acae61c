"""Import rules that import-linter cannot check, because ``compute_ctl.operator`` has no
``__init__.py`` (a regular top-level package named ``operator`` would shadow the standard
library's; see ``operator/about.py``): read every module's imports with ``ast``.

- ``compute`` never imports the operator (nor kopf or kubernetes: import-linter checks
  those too).
- In the operator, kopf and kubernetes stay at the edge (``handlers``, ``__main__``, and
  ``diffbase``, a kopf storage plugin), and
  status rendering and reconciling never import the handlers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_EDGE = {"handlers", "__main__", "diffbase"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _hits(imports: set[str], forbidden: tuple[str, ...]) -> set[str]:
    return {n for n in imports if any(n == f or n.startswith(f + ".") for f in forbidden)}


@pytest.mark.parametrize("path", sorted((ROOT / "compute").rglob("*.py")), ids=str)
def test_compute_never_imports_the_operator(path: Path) -> None:
    assert not _hits(_imports(path), ("compute_ctl.operator", "kopf", "kubernetes"))


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "operator").rglob("*.py") if p.stem not in OPERATOR_EDGE),
    ids=str,
)
def test_operator_keeps_kopf_at_the_edge(path: Path) -> None:
    assert not _hits(_imports(path), ("kopf", "kubernetes", "compute_ctl.operator.handlers"))


def test_the_rules_see_the_operator() -> None:
    """The operator has modules, and its handlers do use kopf (the rule bites)."""
    handlers = ROOT / "operator" / "handlers.py"
    assert _hits(_imports(handlers), ("kopf",))
    assert not (ROOT / "operator" / "__init__.py").exists()
