"""Rank-zero figures of a run: ``<run>/figures/`` and, with a W&B logger, the same figures, W&B's interactive
confusion matrix and a table of test predictions. Drawing itself is ``plots.py``'s pure functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from torch import Tensor

from cifar_lightning.constants import Normalization
from cifar_lightning.models.classifier import classifier
from cifar_lightning.report import plots
from cifar_lightning.run.results import run_dir
from cifar_lightning.run.runs import METRICS_FILE, model_name, read_curves


class RunFigures(L.Callback):
    """Draws the run's figures into ``<run>/figures/`` and, when a W&B logger is attached, logs them there too.

    After fit: learning curves. After testing, also the test confusion matrix (counts and row-normalized),
    per-class accuracy, and the ``max_mistakes`` most confident test mistakes. Under DDP the confusion matrix covers
    every rank (torchmetrics syncs it); the mistakes grid shows rank 0's share of the test set.

    Args:
        max_mistakes: images in the mistakes grid.
    """

    # Seconds to draw and save, timed on 2 real-AVX2 cores (benchmarks/RESULTS.md, 2026-12-07): the curves after
    # fit; the confusion matrix, per-class bars and mistakes grid after a test. The estimate counts them.
    CURVES_SECONDS, TEST_FIGURES_SECONDS = 0.6, 1.8

    def __init__(self, max_mistakes: int = 32) -> None:
        self.max_mistakes = max_mistakes
        self._mistakes: list[Tensor] | None = None  # confidence, image, true label, predicted label
        self._sample: list[Tensor] | None = None  # the same four, for the first test images
        self._curves_of: Path | None = None  # the run whose curves this callback drew at fit end

    def after_fit_seconds(self, test: bool) -> float:
        return self.CURVES_SECONDS + (self.TEST_FIGURES_SECONDS if test else 0.0)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mistakes = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero or not isinstance(outputs, Tensor):
            return
        images, labels = batch
        confidence, predicted = outputs.detach().float().softmax(-1).max(-1)
        if batch_idx == 0:
            first = slice(0, self.max_mistakes)
            self._sample = [t[first].detach().cpu() for t in (confidence, images.float(), labels, predicted)]
        wrong = predicted != labels
        found = [t.detach().cpu() for t in (confidence[wrong], images[wrong].float(), labels[wrong], predicted[wrong])]
        if self._mistakes is not None:  # merge with the most confident so far
            found = [torch.cat([old, new]) for old, new in zip(self._mistakes, found, strict=True)]
        keep = found[0].argsort(descending=True)[: self.max_mistakes]
        self._mistakes = [t[keep] for t in found]

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, test=False)  # the curves exist even where there is no test split

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, test=True)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, test: bool) -> None:
        run = run_dir(trainer)
        if run is None:
            return
        for logger in trainer.loggers:
            logger.save()  # flush metrics.csv before reading the curves back
        # The curves show training and validation only, so after a fit in this process the test adds nothing to them
        figures = self.draw(run, pl_module, test, curves=not test or run != self._curves_of)
        if not test:
            self._curves_of = run
        folder = run / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, fig in figures.items():
            paths[name] = folder / f"{name}.png"
            fig.savefig(paths[name], dpi=110)
        confusion = classifier(pl_module).test_confusion if test else None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_figures_to_wandb(logger, paths, confusion, pl_module)
                if test:
                    module = classifier(pl_module)
                    parts = [self._mistakes, self._sample]
                    log_predictions_table(logger, parts, list(module.class_names), module.input_normalization)

    def draw(
        self, run_dir: Path, pl_module: L.LightningModule, test: bool = True, curves: bool = True
    ) -> dict[str, Figure]:
        """With ``curves``, the learning curves from the run's metrics.csv; with ``test``, the figures of the last
        test."""
        classes = list(classifier(pl_module).class_names)
        model = model_name(pl_module)
        figures = {}
        points = read_curves(run_dir) if curves and (run_dir / METRICS_FILE).is_file() else {}
        if points:
            figures["learning_curves"] = plots.learning_curves({model: points})
        confusion = classifier(pl_module).test_confusion
        if test and confusion is not None:
            counts = confusion.numpy()
            figures["confusion_matrix"] = plots.confusion_matrix(counts, classes)
            recall = counts.diagonal() / counts.sum(axis=1).clip(min=1)
            figures["per_class_accuracy"] = plots.per_class_bars({model: dict(zip(classes, recall, strict=True))})
        if test and self._mistakes is not None and len(self._mistakes[0]):
            confidence, images, true, predicted = self._mistakes
            figures["mistakes"] = plots.mistakes_grid(
                images.numpy(),
                true.tolist(),
                predicted.tolist(),
                confidence.tolist(),
                classes,
                normalization=classifier(pl_module).input_normalization,
            )
        return figures


def log_figures_to_wandb(
    logger: WandbLogger, paths: dict[str, Path], confusion: Tensor | None, pl_module: L.LightningModule
) -> None:
    """The saved PNGs as W&B images, and the confusion matrix as W&B's interactive confusion-matrix plot."""
    import wandb  # the W&B package is only needed where a W&B logger is attached

    for name, path in paths.items():
        logger.log_image(key=f"figures/{name}", images=[str(path)])
    if confusion is not None:
        # wandb.plot.confusion_matrix wants label lists; rebuilding them from the counts gives the same matrix.
        counts = confusion.numpy()
        true, predicted = np.indices(counts.shape).reshape(2, -1)  # every (true, predicted) cell
        y_true, preds = np.repeat(true, counts.ravel()), np.repeat(predicted, counts.ravel())
        class_names = list(classifier(pl_module).class_names)
        plot = wandb.plot.confusion_matrix(y_true=y_true.tolist(), preds=preds.tolist(), class_names=class_names)
        logger.experiment.log({"test/confusion_matrix": plot})


def log_predictions_table(
    logger: WandbLogger, parts: list[list[Tensor] | None], classes: list[str], normalization: Normalization
) -> None:
    """``test/predictions``, a W&B table (image, truth, prediction, confidence, mistake) of the most confident
    mistakes and the first test images, as W&B's Lightning examples log it."""
    import wandb

    rows = []
    for part, mistake in zip(parts, (True, False), strict=True):
        if part is None:
            continue
        confidence, images, true, predicted = part
        columns = (
            plots.to_uint8(images.numpy(), normalization),
            true.tolist(),
            predicted.tolist(),
            confidence.tolist(),
        )
        for image, t, p, c in zip(*columns, strict=True):
            rows.append([wandb.Image(image.transpose(1, 2, 0)), classes[t], classes[p], round(c, 4), mistake or t != p])
    if rows:
        logger.log_table(
            "test/predictions", columns=["image", "truth", "prediction", "confidence", "mistake"], data=rows
        )
