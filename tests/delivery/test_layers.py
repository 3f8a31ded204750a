"""Delivery executes decisions; it does not make them, so it never imports the decision module."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.delivery

DELIVERY = Path(gateway.delivery.__file__).parent


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_no_delivery_module_imports_the_decision_module() -> None:
    modules = sorted(DELIVERY.glob("*.py"))
    assert len(modules) > 3
    for module in modules:
        assert "gateway.routing.policy.decide" not in imported(module), module.name
