"""Classify image files with a trained model: a Lightning checkpoint (``.ckpt``) or an exported ``model.pt2``.

    python -m cifar_lightning.predict runs/cnn/<id>/model.pt2 cat.png truck.jpg ...

Prints the top-3 classes with their probabilities for each image, classifying them ``BATCH_SIZE`` at a time. Images
that are not 32x32 are resized (with a notice); 16-bit images are scaled to 8 bits. A file that cannot be classified
(missing, a folder or pipe, not an image, damaged, or larger than PIL's decompression-bomb limit) is named in one line
and skipped, and the exit status is 1 if any was skipped; a model file that cannot be used exits 2 before any image.

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
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from cifar_lightning.constants import CLASSES, IMAGE_SIZE
from cifar_lightning.data.sources import DataError, to_rgb
from cifar_lightning.files import atomic_target
from cifar_lightning.models.classifier import CIFAR10Classifier, classifier
from cifar_lightning.models.cnn import CNNClassifier
from cifar_lightning.models.mlp import MLPClassifier
from cifar_lightning.report.export import EXPORT_FILE, Normalized, load_exported
from cifar_lightning.run.results import run_dir

TOP_K = 3
BATCH_SIZE = 256  # images per forward pass: thousands at once would need gigabytes of activations


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says what it is and what was expected."""


def load_model(path: Path) -> tuple[nn.Module, list[str]]:
    """A model that maps 0..1 images ``(N, 3, 32, 32)`` to logits, and its class names."""
    check_model_path(path)
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


def check_model_path(path: Path) -> None:
    """Refuses, with what to pass instead, the paths that are plainly not a model this command runs."""
    if path.is_dir():
        inside = path / EXPORT_FILE
        if inside.is_file():
            raise ModelFileError(f"{path} is a run folder, not a model file. Pass the model inside it: {inside}")
        raise ModelFileError(f"{path} is a folder, not a model file. Pass a model.pt2 or .ckpt written by train.py.")
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    if path.suffix.lower() in Image.registered_extensions():  # the arguments swapped: the zip check would blame it
        raise ModelFileError(
            f"{path} is an image, not a model: the model comes first (python -m cifar_lightning.predict MODEL "
            "IMAGE...)."
        )
    if path.suffix.lower() == ".onnx":  # it would fail the zip check below, which blames a damaged file
        sibling = path.with_name(EXPORT_FILE)
        instead = f"the {EXPORT_FILE} beside it ({sibling})" if sibling.is_file() else f"the run folder's {EXPORT_FILE}"
        raise ModelFileError(
            f"{path} is an ONNX model, which predict does not run (only .pt2 and .ckpt; ONNX needs an ONNX runtime, "
            f"which this package does not install). Pass {instead} or a .ckpt from the run instead."
        )


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


class ImageFileError(ValueError):
    """An image file that cannot be classified; the message names it and says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")


def read_image(path: Path) -> Tensor:
    """``(3, 32, 32)`` float 0..1; other sizes are resized with a notice on stderr. Raises ImageFileError."""
    rgb = decode_image(path)
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        print(f"note: {path} is {rgb.size[0]}x{rgb.size[1]}; resized to {IMAGE_SIZE}x{IMAGE_SIZE}", file=sys.stderr)
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255


def decode_image(path: Path) -> Image.Image:
    """The file's pixels as 8-bit RGB. Every way a file can fail (PIL raises many exception types for damaged
    files) becomes one ImageFileError, so one bad file never stops the others from being classified."""
    if not path.is_file():  # a pipe or device would block or never end; a folder is a likely slip of a glob
        if path.is_dir():
            raise ImageFileError(path, f"a folder, not an image (pass the images in it: {path / '*.png'})")
        raise ImageFileError(path, "not a regular file" if path.exists() else "no such file")
    try:
        with open_checked(path) as img:
            return to_rgb(img, path)  # as training decodes its images (any mode, 16-bit scaled, never clipped)
    except ImageFileError:
        raise
    except DataError as err:
        raise ImageFileError(path, str(err)) from None
    except UnidentifiedImageError:
        raise ImageFileError(path, "not an image PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    except MemoryError:
        raise ImageFileError(path, "too large to decode in this machine's memory; shrink it first") from None
    except Exception as err:
        raise ImageFileError(path, f"damaged or truncated? ({type(err).__name__}: {str(err)[:160]})") from None


def open_checked(path: Path) -> Image.Image:
    """``Image.open`` (which reads only the header), refusing images over PIL's decompression-bomb limit by size:
    PIL raises over twice the limit, but between the limit and twice it only warns and then decodes it all."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # checked below, where the message can give the size (a global: one thread only)
    try:
        img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if limit is not None and img.width * img.height > limit:
        img.close()
        raise ImageFileError(
            path,
            f"{img.width}x{img.height} pixels, over PIL's limit of {limit:,} for one image (a possible decompression "
            f"bomb); shrink it to about {IMAGE_SIZE}x{IMAGE_SIZE} first",
        )
    return img


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
    failed = 0
    for start in range(0, len(args.images), BATCH_SIZE):
        failed += classify(model, classes, args.images[start : start + BATCH_SIZE])
    return 1 if failed else 0


def classify(model: nn.Module, classes: Sequence[str], paths: Sequence[Path]) -> int:
    """Prints the top classes of each readable image of ``paths``; returns how many were skipped."""
    readable, failed = [], 0
    for path in paths:
        try:
            readable.append((path, read_image(path)))
        except ImageFileError as err:
            print(f"error: {err}; skipped", file=sys.stderr)
            failed += 1
    if readable:
        probabilities = predict(model, torch.stack([image for _, image in readable]))
        top = probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=-1)
        for (path, _), values, indices in zip(readable, top.values, top.indices, strict=True):
            ranked = ", ".join(f"{classes[i]} {p:.1%}" for p, i in zip(values.tolist(), indices.tolist(), strict=True))
            print(f"{path}: {ranked}")
    return failed
