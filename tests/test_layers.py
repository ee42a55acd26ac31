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


# One fresh interpreter for all three checks (each start imports torch and Lightning again): first what importing
# the package loads, then `python -m cifar_lightning.compare --help` and `.predict --help` the way -m runs them.
ENTRY_POINTS_PROBE = f"""
import contextlib, io, runpy, sys
import cifar_lightning
print(sorted(m for m in sys.modules if m.startswith({MACHINERY})))
for module in ("compare", "predict"):
    sys.argv, out = [module, "--help"], io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(f"cifar_lightning.{{module}}", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            print(module, exit.code, "usage:" in out.getvalue(), file=sys.__stdout__)
"""


@pytest.mark.processes
def test_importing_the_product_loads_no_machinery_and_the_python_m_entry_points_answer() -> None:
    out = subprocess.run([sys.executable, "-c", ENTRY_POINTS_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, *answers = out.stdout.splitlines()
    assert loaded == "[]"  # no run/report module loaded by `import cifar_lightning`
    assert answers == ["compare 0 True", "predict 0 True"]  # each printed its usage and exited 0
