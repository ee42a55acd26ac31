"""Rank-zero side effects at the end of a run: the run's ``results.json``.

``results.json`` is read by other tools; its keys are stable (add keys, never rename them):

- ``model`` (``"cnn"``, ``"mlp"``), ``model_class``, ``parameters``, ``precision``, ``seed``, ``data_dir``
- ``val/acc_best``, ``epochs``, ``train_seconds`` (wall time of fit), ``images_per_second`` (training images per
  second of training-loop time, validation excluded), ``best_checkpoint``
- ``test/acc``, ``test/loss``, ``test/acc_per_class`` (class name -> accuracy); null where no test was run
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from cifar_lightning.nets import count_parameters

RESULTS_FILE = "results.json"


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else round(float(value), 6)


class RunSummary(L.Callback):
    """Times training and writes ``results.json`` into the run folder (``trainer.log_dir``) after fit and test."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self._images = 0
        self._loop_seconds = 0.0
        self._fit_start = self._epoch_start = self._val_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation runs inside the training epoch: take its time out of the training-loop time.
        if trainer.training and not trainer.sanity_checking:
            self._epoch_start += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loop_seconds += time.perf_counter() - self._epoch_start

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        self.results.update(
            {
                "val/acc_best": _metric(trainer, "val/acc_best"),
                "epochs": trainer.current_epoch,
                "train_seconds": round(time.perf_counter() - self._fit_start, 2),
                "images_per_second": round(self._images / self._loop_seconds, 1) if self._loop_seconds else None,
                "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            }
        )
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prefix = "test/acc_"
        per_class = {k.removeprefix(prefix): round(float(v), 6) for k, v in trainer.callback_metrics.items()
                     if k.startswith(prefix)}  # fmt: skip
        self.results.update(
            {"test/acc": _metric(trainer, "test/acc"), "test/loss": _metric(trainer, "test/loss"),
             "test/acc_per_class": per_class}
        )  # fmt: skip
        if trainer.ckpt_path:
            self.results["tested_checkpoint"] = str(trainer.ckpt_path)
        self._write(trainer, pl_module)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.log_dir is None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        results = {
            "model": type(pl_module).__name__.removesuffix("Classifier").lower(),
            "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "parameters": count_parameters(pl_module),
            "precision": str(trainer.precision),
            "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
            "data_dir": str(getattr(datamodule, "data_dir", "")) or None,
            **dict.fromkeys(("val/acc_best", "epochs", "train_seconds", "images_per_second", "best_checkpoint")),
            **dict.fromkeys(("test/acc", "test/loss", "test/acc_per_class")),
            **self.results,
        }
        path = Path(trainer.log_dir) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, path)
