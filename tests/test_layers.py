"""The tree's layers hold: the product (data, models) never imports the run machinery or the reporting, and the
public imports and entry points of the flat package it grew from keep working."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cifar_lightning

PACKAGE = Path(cifar_lightning.__file__).parent
PRODUCT = ("data", "models")
MACHINERY = ("cifar_lightning.run", "cifar_lightning.report")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize("layer", PRODUCT)
def test_the_product_never_imports_the_machinery(layer: str) -> None:
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    wrong = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.startswith(MACHINERY)
    }
    assert not wrong, f"the {layer} layer imports run/report: {sorted(wrong)}"


def test_importing_the_product_loads_no_machinery() -> None:
    probe = f"import sys, cifar_lightning; print(sorted(m for m in sys.modules if m.startswith({MACHINERY})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["compare", "predict"])
def test_the_python_m_entry_points_still_answer(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", f"cifar_lightning.{module}", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "usage:" in out.stdout
