"""The package's arrows run one way: no folder imports one above it (docs/architecture.md has the order)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).parent
# Top down. A folder may import any folder after it in this list, never one before it. operations/ (metrics,
# logs) is read by every layer, so it sits low; its reload and audit modules read only the policy below it.
ORDER = ("tools", "serving", "inbound", "pipeline", "delivery", "accounting", "routing", "state", "upstreams",
         "operations")
ROOT_MODULES = ("errors", "asgi", "sse", "values")  # the bottom: they import no folder
ALLOWED = {("operations", "routing"), ("operations", "upstreams")}  # reload loads a policy, its catalog prices it


def layer(module: str) -> str:
    """The folder (or root module) a dotted gateway module belongs to."""
    return module.split(".")[1] if module.count(".") else module


def imports(path: Path) -> set[str]:
    """Every gateway module path imports (at any depth, TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "gateway":
            found.update(f"gateway.{alias.name}" for alias in node.names)
    return found


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_imports_a_folder_above_its_own(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    for module in imports(path):
        target = layer(module)
        if target == own or target in ROOT_MODULES or (own, target) in ALLOWED:
            continue
        assert own not in ROOT_MODULES, f"{own} is at the bottom, yet imports {module}"
        assert ORDER.index(target) > ORDER.index(own), f"{path.relative_to(PACKAGE)} imports {module}, above it"


def test_every_folder_is_placed() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert folders == set(ORDER)
    roots = {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    assert roots == set(ROOT_MODULES)
