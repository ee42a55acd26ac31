"""Fixtures: synthetic data folders, and W&B kept offline in a temporary folder (the builders are in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """The default suite runs in one pytest-xdist worker per core (``-n auto``). Each worker, and each train.py it
    starts, then gets one thread: torch's default of one thread per core would put two spinning OpenMP pools on each
    core, and the suite took 5:56 that way against 3:53 on 2 AVX2 cores (docs/performance.md)."""
    if hasattr(config, "workerinput"):  # set in xdist workers only; a serial run (-n 0) keeps torch's default
        import torch  # here, not at the top: the xdist controller never needs torch and starts the workers sooner

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def batches_dir(tmp_path: Path) -> Path:
    from helpers import write_batches

    return write_batches(tmp_path / "batches")


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    from helpers import write_folder

    return write_folder(tmp_path / "folder")


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test talks to a W&B server or writes outside its tmp_path."""
    wandb_root = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(wandb_root / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("CIFAR_LIGHTNING_RUN_ID", raising=False)
    return wandb_root
