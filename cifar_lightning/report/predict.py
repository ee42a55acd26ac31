"""Classify image files with a trained model: a Lightning checkpoint (``.ckpt``) or an exported ``model.pt2``.

    python -m cifar_lightning.predict runs/cnn/<id>/model.pt2 cat.png truck.jpg ...

Prints the top-3 classes with their probabilities for each image. Images that are not 32x32 are resized (with a
notice); a file that cannot be read is reported and skipped, and the exit status is 1 if any was skipped.

``PredictionWriter`` is the other way in: ``train.py predict`` writes the test split's predictions to the run folder.
"""

from __future__ import annotations

import argparse
import csv
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor, nn

from cifar_lightning.constants import CLASSES, IMAGE_SIZE
from cifar_lightning.files import atomic_target
from cifar_lightning.models.classifier import CIFAR10Classifier, classifier
from cifar_lightning.models.cnn import CNNClassifier
from cifar_lightning.models.mlp import MLPClassifier
from cifar_lightning.report.export import Normalized, load_exported
from cifar_lightning.run.results import run_dir

TOP_K = 3


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what it is and what was expected."""


def load_model(path: Path) -> tuple[nn.Module, list[str]]:
    """A model that maps 0..1 images ``(N, 3, 32, 32)`` to logits, and its class names."""
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    if not zipfile.is_zipfile(path):  # both formats are zip archives; checking first keeps torch's noise away
        raise ModelFileError(
            f"Could not load {path}: it is not a checkpoint or exported model (not a zip archive; truncated or a "
            "different format?). Pass a model.pt2 or .ckpt written by train.py."
        )
    try:
        if path.suffix == ".pt2":
            model, meta = load_exported(path)
            return model, list(meta.get("classes") or CLASSES)
        return load_checkpoint(path)
    except ModelFileError:
        raise
    except Exception as err:  # torch raises many types for a damaged or foreign file; all mean the same to a user
        raise ModelFileError(
            f"Could not load {path} as a {'torch.export program' if path.suffix == '.pt2' else 'Lightning checkpoint'}"
            f" ({type(err).__name__}: {str(err)[:200]}). Pass a model.pt2 or .ckpt written by train.py."
        ) from None


def load_classifier(path: Path) -> CIFAR10Classifier:
    """The LightningModule of a checkpoint, in eval mode on the CPU, rebuilt from its stored hyperparameters.

    train.py's checkpoints name their class (``_class_path``); only this package's classifiers are accepted, so a
    checkpoint cannot make this import arbitrary code. Checkpoints from other Trainers are told apart by their
    arguments.
    """
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise ModelFileError(f"{path} is not a cifar-lightning checkpoint: it holds no hyper_parameters.")
    known = _subclasses(CIFAR10Classifier)
    classes = {f"cifar_lightning.{c.__name__}": c for c in known} | {f"{c.__module__}.{c.__name__}": c for c in known}
    default = CNNClassifier if "widths" in hparams else MLPClassifier  # checkpoints from before _class_path
    cls = classes.get(hparams.get("_class_path", ""), default)
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def _subclasses(cls: type[CIFAR10Classifier]) -> list[type[CIFAR10Classifier]]:
    """Every classifier defined so far (a model added under models/ is found without a change here)."""
    found = cls.__subclasses__()
    return found + [sub for child in found for sub in _subclasses(child)]


def load_checkpoint(path: Path) -> tuple[nn.Module, list[str]]:
    module = load_classifier(path)
    return Normalized(module.net, module.input_normalization).eval(), list(module.class_names)


def read_image(path: Path) -> Tensor:
    """``(3, 32, 32)`` float 0..1; other sizes are resized with a notice on stderr."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        print(f"note: {path} is {rgb.size[0]}x{rgb.size[1]}; resized to {IMAGE_SIZE}x{IMAGE_SIZE}", file=sys.stderr)
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255


@torch.no_grad()
def predict(model: nn.Module, images: Tensor) -> Tensor:
    """Class probabilities ``(N, num_classes)`` for 0..1 images."""
    return model(images).float().softmax(-1)


class PredictionWriter(BasePredictionWriter):
    """``train.py predict``: writes ``predictions.csv`` into the run folder, one row per test image: ``index`` (its
    position in the test split), ``label``, ``predicted``, ``confidence`` and one probability column per class.

    Under DDP each rank writes ``predictions_rank<r>.csv`` for its shard (evaluation shards take every
    ``world_size``-th image, which is how ``index`` is counted).
    """

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._rows: list[list[object]] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        labels = batch[1].tolist()
        for probabilities, label in zip(prediction.float().cpu().tolist(), labels, strict=True):
            index = trainer.global_rank + trainer.world_size * len(self._rows)
            best = max(range(len(probabilities)), key=probabilities.__getitem__)
            self._rows.append(
                [index, label, best, round(probabilities[best], 6), *(round(p, 6) for p in probabilities)]
            )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_dir(trainer)
        if folder is None or not self._rows:
            return
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.csv"
        classes = list(classifier(pl_module).class_names)
        path = folder / name
        with atomic_target(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "predicted", "confidence", *(f"p_{c}" for c in classes)])
            writer.writerows(self._rows)
        print(f"Predictions for {len(self._rows)} images: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.predict", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model.pt2 or a .ckpt from train.py")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        model, classes = load_model(args.model)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    readable, failed = [], 0
    for path in args.images:
        try:
            readable.append((path, read_image(path)))
        except (OSError, ValueError) as err:
            print(f"error: cannot read {path} ({err}); skipped", file=sys.stderr)
            failed += 1
    if readable:
        probabilities = predict(model, torch.stack([image for _, image in readable]))
        top = probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=-1)
        for (path, _), values, indices in zip(readable, top.values, top.indices, strict=True):
            ranked = ", ".join(f"{classes[i]} {p:.1%}" for p, i in zip(values.tolist(), indices.tolist(), strict=True))
            print(f"{path}: {ranked}")
    return 1 if failed else 0
