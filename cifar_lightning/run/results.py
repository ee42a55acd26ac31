"""The run's ``results.json``, written on rank zero (``RunSummary``; the exported model is ``report/export.py``'s
``ExportBest``, the figures ``report/figures.py``'s).

``results.json`` is read by other tools; its keys are stable (add keys, never rename them):

- ``model`` (``"cnn"``, ``"mlp"``), ``model_class``, ``parameters``, ``precision``, ``seed``, ``data_dir``
- ``val/acc_best``, ``epochs``, ``train_seconds`` (wall time of fit), ``images_per_second`` (training images per
  second of training-loop time, validation excluded), ``best_checkpoint``
- ``test/acc``, ``test/loss``, ``test/acc_per_class`` (class name -> accuracy); null where no test was run
- ``test/acc_top5``, ``test/precision_per_class``, ``test/recall_per_class``, ``test/f1_per_class``
- ``global_step``; ``resumed_from`` (the checkpoint fit resumed from, or null); ``interrupted``: null, or
  ``{"signal", "step", "epoch", "checkpoint"}`` when SIGINT/SIGTERM stopped the run
- ``hardware``, ``estimate``, ``estimate_revised`` (null unless the steps changed cost, as progressive resizing's
  do), ``time_budget_minutes`` (from ``estimate.CostReport``, when the run has one);
  ``test_seconds``; ``wall_seconds`` (process start to the end of the last stage, its export and figures included;
  not the interpreter's exit, about 2.5 s on a 2-core CPU)
- ``train_images``, ``parts`` (a resumed run's totals: ``train_seconds`` and ``images_per_second`` cover every part);
  ``evaluates`` (a ``test`` run: the fit run it evaluated); ``tested_in`` (a fit run: where a later test ran)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from cifar_lightning.models.classifier import classifier
from cifar_lightning.models.layers import count_parameters
from cifar_lightning.run.budget import seconds_since_process_start
from cifar_lightning.run.estimate import CostReport
from cifar_lightning.run.runs import RESULTS_FILE, RunError, model_name, read_results, write_json_atomic
from cifar_lightning.run.signals import GracefulStop


def run_dir(trainer: L.Trainer) -> Path | None:
    """``trainer.log_dir`` without its broadcast: that is a collective call, and these callbacks run on rank 0 only
    (calling it there deadlocks DDP)."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    folder = getattr(logger, "log_dir", None) or logger.save_dir
    return Path(folder) if folder else None


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else round(float(value), 6)


class RunSummary(L.Callback):
    """Times training and writes ``results.json`` into the run folder (``run_dir``) after fit and test.

    Its counters travel in checkpoints, so a resumed run reports the whole run: ``train_seconds``, ``train_images``
    and ``images_per_second`` add up every part (work redone after a kill counts again: it took time), and ``parts``
    says how many there were. ``evaluates``: the fit run folder whose checkpoint a ``test`` evaluates; that run's
    results.json then gets the test metrics too, so ``compare`` shows them next to it.
    """

    def __init__(self, evaluates: Path | None = None) -> None:
        self.results: dict[str, Any] = {}
        self.evaluates = evaluates
        self._images = 0
        self._loop_seconds = self._fit_before = 0.0
        self._parts = 1
        self._in_epoch = False
        self._fit_start = self._epoch_start = self._val_start = self._test_start = 0.0
        self._written: tuple[Path, dict[str, Any]] | None = None  # results.json and what this process last wrote there

    def state_dict(self) -> dict[str, Any]:
        now = time.perf_counter()
        loop = self._loop_seconds + (now - self._epoch_start if self._in_epoch else 0.0)
        fit = self._fit_before + (now - self._fit_start if self._fit_start else 0.0)
        return {"images": self._images, "loop_seconds": loop, "fit_seconds": fit, "parts": self._parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._images, self._loop_seconds = int(state["images"]), float(state["loop_seconds"])
        self._fit_before, self._parts = float(state["fit_seconds"]), int(state["parts"]) + 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch: its loop time starts here.
        self._epoch_start, self._in_epoch = time.perf_counter(), True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._in_epoch = time.perf_counter(), True

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
        self._in_epoch = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        self.results.update(
            {
                "val/acc_best": _metric(trainer, "val/acc_best"),
                "epochs": trainer.current_epoch,
                "train_seconds": round(self._fit_before + time.perf_counter() - self._fit_start, 2),
                "images_per_second": round(self._images / self._loop_seconds, 1) if self._loop_seconds else None,
                "train_images": self._images,
                "parts": self._parts,
                "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
                "global_step": trainer.global_step,
                "resumed_from": str(trainer.ckpt_path) if trainer.ckpt_path else None,
                "interrupted": None,
            }
        )
        self._write(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        stop = GracefulStop.of(trainer)
        if stop is None or stop.signal_name is None or trainer.state.fn != "fit" or stop.after_training:
            return  # a stop during test or the export leaves the finished fit's record as it was
        self.results.update(
            {
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "interrupted": {
                    "signal": stop.signal_name,
                    "step": stop.step,
                    "epoch": trainer.current_epoch,
                    "checkpoint": stop.checkpoint,
                },
            }
        )
        self._write(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test_start = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["test_seconds"] = round(time.perf_counter() - self._test_start, 2)
        self.results.update(
            {
                "test/acc": _metric(trainer, "test/acc"),
                "test/loss": _metric(trainer, "test/loss"),
                "test/acc_top5": _metric(trainer, "test/acc_top5"),
            }
        )
        metrics, classes = trainer.callback_metrics, classifier(pl_module).class_names
        for kind in ("acc", "precision", "f1"):
            self.results[f"test/{kind}_per_class"] = {
                c: round(float(metrics[f"test/{kind}_{c}"]), 6) for c in classes if f"test/{kind}_{c}" in metrics
            }
        # per-class accuracy is per-class recall; the module logs it once, as test/acc_<class>
        self.results["test/recall_per_class"] = self.results["test/acc_per_class"]
        if trainer.ckpt_path:
            self.results["tested_checkpoint"] = str(trainer.ckpt_path)
        self._write(trainer, pl_module)
        if self.evaluates is not None:
            self._record_in_evaluated_run(trainer)

    @rank_zero_only
    def _record_in_evaluated_run(self, trainer: L.Trainer) -> None:
        """The test metrics into the evaluated fit run's results.json, with where they were measured."""
        assert self.evaluates is not None
        try:
            fitted = read_results(self.evaluates)
        except RunError as err:
            rank_zero_warn(f"The test is not recorded in the evaluated run: {err}")
            return
        tested = {k: v for k, v in self.results.items() if k.startswith("test") or k == "tested_checkpoint"}
        write_json_atomic(self.evaluates / RESULTS_FILE, {**fitted, **tested, "tested_in": str(run_dir(trainer))})

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_dir(trainer)
        if folder is None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        results = {
            "model": model_name(pl_module),
            "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "parameters": count_parameters(pl_module),
            "precision": str(trainer.precision),
            "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
            "data_dir": str(getattr(datamodule, "data_dir", "")) or None,
            **dict.fromkeys(("val/acc_best", "epochs", "train_seconds", "images_per_second", "best_checkpoint")),
            **dict.fromkeys(("test/acc", "test/loss", "test/acc_per_class", "test/acc_top5")),
            **dict.fromkeys(f"test/{kind}_per_class" for kind in ("precision", "recall", "f1")),
            **dict.fromkeys(("global_step", "resumed_from", "interrupted")),
            **dict.fromkeys(("hardware", "estimate", "estimate_revised", "time_budget_minutes", "test_seconds")),
            **(report.record if (report := CostReport.of(trainer)) else {}),
            **self.results,
            "evaluates": str(self.evaluates) if self.evaluates else None,
            "wall_seconds": round(seconds_since_process_start(), 1) or None,
        }
        write_json_atomic(folder / RESULTS_FILE, results)
        self._written = folder / RESULTS_FILE, results

    @rank_zero_only
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # results.json is written first thing at the end of fit and of test, so that a Ctrl-C during the export keeps
        # it; the export and the figures come after, and took 5.7 s of a 51 s MLP run. Count them in wall_seconds.
        if self._written is not None:
            path, results = self._written
            write_json_atomic(path, {**results, "wall_seconds": round(seconds_since_process_start(), 1) or None})
