"""Weights & Biases without surprises: offline when there are no credentials, and always finished."""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from cifar_lightning.nets import count_parameters

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


def make_wandb_logger(
    run_dir: Path, group: str, name: str, config: dict[str, Any] | None = None, tags: Sequence[str] = ()
) -> WandbLogger:
    """A WandbLogger writing into ``run_dir/wandb``; offline unless credentials exist or WANDB_MODE says otherwise.

    ``group`` (the model name) and ``tags`` let the dashboard put runs side by side without manual setup;
    ``config`` (the resolved run config) becomes the W&B run config. Checkpoints are uploaded as model artifacts only
    when the run is online.
    """
    offline = "WANDB_MODE" not in os.environ and not has_wandb_credentials()
    if offline:
        rank_zero_info(
            "W&B: no credentials found, logging offline (upload later with `wandb sync`, printed at the end)."
        )
    online = not offline and os.environ.get("WANDB_MODE", "online") not in ("offline", "dryrun", "disabled")
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=PROJECT, group=group, name=f"{group}-{name}", save_dir=str(run_dir), offline=offline,
        log_model=online, config=config, tags=list(tags),
    )  # fmt: skip


class WandbRunSetup(L.Callback):
    """Rank 0, when fit or test starts: the parameter count into the run config, and ``val/acc`` summarized by its
    maximum (W&B keeps the last value by default, which is not the run's result)."""

    @rank_zero_only
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.define_metric("val/acc", summary="max")
                run.define_metric("val/acc_best", summary="max")
                run.config.update({"parameters": count_parameters(pl_module)}, allow_val_change=True)


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
