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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cifar_lightning.constants import IMAGE_SHAPE, MEAN, STD

META_FILE = "cifar_lightning.json"
EXPORT_FILE = "model.pt2"


class Normalized(nn.Module):
    """``net`` behind the CIFAR-10 normalization, so that callers feed plain 0..1 images."""

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def export_net(net: nn.Module, path: Path, classes: Sequence[str], extra: dict[str, Any] | None = None) -> Path:
    """Exports an eval-mode, fp32, CPU copy of ``net`` (the original is left as it was) with a dynamic batch size."""
    model = Normalized(copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)).eval()
    example = torch.rand(2, *IMAGE_SHAPE)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    meta = {
        "classes": list(classes),
        "input": "float32 RGB images (N, 3, 32, 32) scaled to 0..1; normalization is inside the model",
        "mean": list(MEAN),
        "std": list(STD),
        "output": "logits (N, num_classes)",
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.export.save(program, tmp, extra_files={META_FILE: json.dumps(meta)})
    tmp.replace(path)  # never leave a half-written model behind
    return path


def load_exported(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported model (takes 0..1 images) and its metadata."""
    extra = {META_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    return program.module(), json.loads(extra[META_FILE] or "{}")
