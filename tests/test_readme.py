"""The README's Python snippets run as written: only the data path is pointed at synthetic data, the validation
split shrunk to fit it and the CNN made narrow (the default's widths take seconds even on 80 images), and the
exported-model snippet runs in a folder holding a real run's model.pt2."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_dirs, tiny_args

from cifar_lightning.run.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_the_snippets_this_test_runs() -> None:
    found = snippets()
    assert len(found) == 2 and "CIFAR10DataModule(" in found[0] and "torch.export.load" in found[1]


def test_the_datamodule_snippet_runs(folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet's Trainer writes lightning_logs/ into the working folder
    code = snippets()[0]
    for written, here in (
        ('"~/data/cifar10-jpeg"', repr(str(folder_dir))),
        ("val_split=5000", "val_split=20"),
        ('CNNClassifier(**recipe_args("cnn"))', 'CNNClassifier(**recipe_args("cnn"), widths=(8, 16, 32))'),
    ):
        assert written in code, f"the README's DataModule snippet no longer says {written}: update this test"
        code = code.replace(written, here)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    x = scope["x"]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (80, 3, 32, 32)  # one batch: all 80


def test_the_exported_model_snippet_runs(folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(tiny_args(folder_dir, tmp_path / "runs", "mlp")) == 0
    [run] = run_dirs(tmp_path / "runs")
    shutil.copy(run / "model.pt2", tmp_path / "model.pt2")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(snippets()[1], "README.md", "exec"), scope)
    probabilities = scope["probabilities"]
    assert isinstance(probabilities, torch.Tensor) and probabilities.shape == (4, 10)
    assert torch.allclose(probabilities.sum(-1), torch.ones(4)) and len(scope["classes"]) == 10  # type: ignore[arg-type]
