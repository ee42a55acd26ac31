"""Fixtures: synthetic data folders, and W&B kept offline in a temporary folder (the builders are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_batches, write_folder


@pytest.fixture
def batches_dir(tmp_path: Path) -> Path:
    return write_batches(tmp_path / "batches")


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
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
