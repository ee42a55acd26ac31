"""The package as users install it: a wheel (not an editable checkout) must carry the configs `--model` names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.processes
def test_a_wheel_install_ships_the_configs_and_a_working_console_script(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    for name in ("cifar_lightning", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)

    # Each console script the wheel declares must name a function that exists (pip writes the launcher blindly).
    probe = (
        "import sys; from importlib.metadata import distributions; from cifar_lightning.run import cli\n"
        "[dist] = distributions(path=[sys.argv[1]])\n"
        "scripts = dist.entry_points.select(group='console_scripts')\n"
        "assert all(callable(s.load()) for s in scripts)\n"
        "print(cli.__file__, cli.expand_model_flag(['--model', 'cnn'])[1], *sorted(s.name for s in scripts))"
    )
    site = str(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": site}  # ahead of the editable install
    done = subprocess.run([sys.executable, "-c", probe, site], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    module, config, *scripts = done.stdout.split()
    assert scripts == ["cifar-lightning-train"]
    assert Path(module).is_relative_to(tmp_path / "site")
    assert Path(config) == tmp_path / "site" / "cifar_lightning" / "configs" / "cnn.yaml"
    shipped = {p.name for p in (tmp_path / "site" / "cifar_lightning" / "configs").glob("*.yaml")}
    assert shipped == {p.name for p in (REPO / "configs").glob("*.yaml")}
