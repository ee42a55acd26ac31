"""A trained network as one portable file: ``torch.export`` (``.pt2``), loadable without Lightning or this package.

The exported program takes float32 RGB images ``(N, 3, 32, 32)`` scaled to 0..1 (``PIL -> ToTensor()``) and returns
logits; the CIFAR-10 normalization is inside it. Class names, the input description and the normalization constants
travel in the file as ``cifar_lightning.json``::

    extra = {"cifar_lightning.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    meta = json.loads(extra["cifar_lightning.json"])
    probabilities = program.module()(images).softmax(-1)     # images: (N, 3, 32, 32), 0..1
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn

from cifar_lightning.constants import IMAGE_SHAPE, MEAN, STD, Normalization
from cifar_lightning.files import atomic_target
from cifar_lightning.models.classifier import classifier
from cifar_lightning.run.results import run_dir

META_FILE = "cifar_lightning.json"
EXPORT_FILE = "model.pt2"
ONNX_FILE = "model.onnx"


class Normalized(nn.Module):
    """``net`` behind its input normalization (CIFAR-10's unless told otherwise), so callers feed plain 0..1 images."""

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, normalization: Normalization = (MEAN, STD)) -> None:
        super().__init__()
        self.net = net
        mean, std = normalization or ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def _portable(net: nn.Module, normalization: Normalization) -> nn.Module:
    """An eval-mode, fp32, CPU copy of ``net`` behind its normalization; the original is left as it was."""
    plain = copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)
    return Normalized(plain, normalization).eval()


def _metadata(classes: Sequence[str], extra: dict[str, Any] | None, normalization: Normalization) -> dict[str, Any]:
    return {
        "classes": list(classes),
        "input": "float32 RGB images (N, 3, 32, 32) scaled to 0..1; normalization is inside the model",
        "mean": list(normalization[0]) if normalization else None,
        "std": list(normalization[1]) if normalization else None,
        "output": "logits (N, num_classes)",
        **(extra or {}),
    }


def export_net(
    net: nn.Module,
    path: Path,
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
    normalization: Normalization = (MEAN, STD),
) -> Path | None:
    """Exports ``net``, with a dynamic batch size, in the format ``path``'s suffix names: ``.pt2`` (``torch.export``,
    metadata in the file as ``META_FILE``) or ``.onnx`` (input ``images``, output ``logits``, metadata in its
    ``metadata_props``; only where the ``onnx`` and ``onnxscript`` packages, which torch's exporter needs, are
    installed, else None)."""
    if path.suffix not in (".pt2", ".onnx"):
        raise ValueError(f"export_net writes .pt2 or .onnx files; got {path}. Name the file model.pt2 or model.onnx.")
    portable, meta = _portable(net, normalization), json.dumps(_metadata(classes, extra, normalization))
    example, batch = torch.rand(2, *IMAGE_SHAPE), torch.export.Dim("batch", min=1, max=65536)
    if path.suffix == ".onnx":
        return _save_onnx(portable, example, batch, path, meta)
    program = torch.export.export(portable, (example,), dynamic_shapes=({0: batch},))
    with atomic_target(path, keep_suffix=True) as tmp, warnings.catch_warnings():
        # torch 2.14 warns that no tensor group is "complete", which is about weights on a GPU only
        warnings.filterwarnings("ignore", "No complete tensor found in the group", UserWarning)
        torch.export.save(program, tmp, extra_files={META_FILE: meta})
    return path


def _save_onnx(portable: nn.Module, example: Tensor, batch: Any, path: Path, meta: str) -> Path | None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter imports it)
    except ImportError:
        return None
    with atomic_target(path, keep_suffix=True) as tmp:  # onnx.save picks the format from the suffix
        torch.onnx.export(
            portable,
            (example,),
            tmp,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,  # else 8 lines of progress on every run
        )
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, {META_FILE: meta})
        onnx.save(model, tmp)
    return path


def load_exported(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported model (takes 0..1 images) and its metadata."""
    extra = {META_FILE: ""}
    torch_log = logging.getLogger("torch.export")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # a damaged file is reported by the caller in one line, not logged twice
    try:
        program = torch.export.load(path, extra_files=extra)
    finally:
        torch_log.setLevel(level)
    return program.module(), json.loads(extra[META_FILE] or "{}")


ExportFormats = Literal["all", "pt2", "none"]


class ExportBest(L.Callback):
    """Rank 0, after fit: exports the best checkpoint's network to ``<run>/model.pt2`` and, where the ``onnx``
    package is installed, ``<run>/model.onnx`` (see ``export.py``).

    Args:
        formats: ``all`` (both files), ``pt2`` (no ONNX, the slower of the two: ``SECONDS``) or ``none``.
    """

    # Seconds each export takes, timed on 2 real-AVX2 cores (the slow class) for the default CNN and MLP, the larger
    # of the two: tracing dominates, not the weights (benchmarks/RESULTS.md, 2026-12-07). The estimate counts them.
    SECONDS: ClassVar[dict[str, float]] = {"none": 0.0, "pt2": 2.0, "all": 8.0}

    def __init__(self, formats: ExportFormats = "all") -> None:
        self.formats = formats

    def after_fit_seconds(self, test: bool) -> float:
        return self.SECONDS[self.formats]

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module, folder = classifier(pl_module), run_dir(trainer)
        if folder is None or self.formats == "none":
            return
        net = copy.deepcopy(module.net)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if best:  # the weights `train.py` tests, not the last epoch's
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        meta = {"model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}", "checkpoint": best}
        classes, normalization = module.class_names, module.input_normalization
        export_net(net, folder / EXPORT_FILE, classes, meta, normalization)
        if self.formats != "all":
            return
        try:  # ONNX is an extra: a converter gap in some torch release must not fail a finished run
            export_net(net, folder / ONNX_FILE, classes, meta, normalization)
        except Exception as err:
            reason = (str(err).splitlines() or [""])[0]
            rank_zero_warn(f"ONNX export skipped ({type(err).__name__}: {reason}); {EXPORT_FILE} is written.")
