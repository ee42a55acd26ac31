"""Weights & Biases without surprises: offline when there are no credentials, and always finished."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

PROJECT = "cifar-lightning"


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def make_wandb_logger(run_dir: Path, group: str, name: str) -> WandbLogger:
    """A WandbLogger writing into ``run_dir/wandb``; offline unless credentials exist or WANDB_MODE says otherwise."""
    offline = "WANDB_MODE" not in os.environ and not has_wandb_credentials()
    if offline:
        rank_zero_info(
            "W&B: no credentials found, logging offline (upload later with `wandb sync`, printed at the end)."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=PROJECT, group=group, name=f"{group}-{name}", save_dir=str(run_dir), offline=offline)


@rank_zero_only
def finish_wandb(trainer: L.Trainer | None) -> None:
    """Closes the W&B run so the next run in this process starts a new one, and prints the sync hint offline."""
    for logger in getattr(trainer, "loggers", []):
        run = getattr(logger, "_experiment", None)
        if not isinstance(logger, WandbLogger) or run is None:
            continue
        offline = run.settings.mode == "offline" if hasattr(run, "settings") else False
        run_path = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the run folder
        run.finish()
        if offline:
            rank_zero_info(f"W&B: offline run saved; upload it with: wandb sync {run_path}")
