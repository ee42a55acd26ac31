"""Building blocks the networks share: size checks, batch norm, max-pooling, conv blocks, parameter count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def check_sizes(name: str, sizes: Sequence[int], drop_rate: float, num_classes: int) -> None:
    """``ValueError`` naming every bad size or rate with its value, before a layer is built from it."""
    problems = []
    if any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in sizes):
        problems.append(f"{name} must be positive integers, got {list(sizes)}")
    if not 0 <= drop_rate < 1:
        problems.append(f"drop_rate must be in [0, 1), got {drop_rate}")
    if num_classes < 2:
        problems.append(f"num_classes must be at least 2, got {num_classes}")
    if problems:
        raise ValueError("; ".join(problems) + ".")


class BatchNorm(nn.BatchNorm2d):
    """Batch norm with a learned shift only: a per-channel scale before GELU adds little and slows a short run.

    ``momentum`` is PyTorch's (weight of the new batch): 0.4 forgets old statistics fast, which suits runs of a few
    hundred steps where early statistics are stale (airbench uses the same value).
    """

    def __init__(self, num_features: int, momentum: float = 0.4) -> None:
        super().__init__(num_features, momentum=momentum, eps=1e-12)
        self.weight.requires_grad_(False)


class _MaxPool2x2Function(torch.autograd.Function):
    """2x2 max-pooling whose backward keeps the winners' indices but not the input.

    ``nn.MaxPool2d`` keeps its whole input for the backward, which reads only the input's shape and layout: in the
    CNN's first block that is the largest activation of the step (benchmarks/RESULTS.md, "Memory and page faults"). An
    unwritten tensor of that shape and layout stands in (no page touched, so no memory used); the kernels are
    PyTorch's own, so results are identical.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out, indices = F.max_pool2d(x, 2, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.input_layout = x.shape, x.stride()
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (indices,) = ctx.saved_tensors
        like_input = torch.empty_strided(*ctx.input_layout, dtype=grad.dtype, device=grad.device)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like_input, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` that trains without keeping its input (``_MaxPool2x2Function``), with equal results.

    Inference (and export) run the plain operator: the custom backward matters only where there is a backward.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2Function.apply(x)
        return F.max_pool2d(x, 2)


class ConvBlock(nn.Module):
    """conv -> max-pool (halves H and W) -> BN -> GELU -> conv -> BN -> GELU.

    Pooling right after the first conv, before its batch norm, runs the norm and the second conv at a quarter of the
    pixels (the ordering of airbench's blocks).
    """

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = MaxPool2x2()
        self.norm1 = BatchNorm(out_channels, bn_momentum)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = BatchNorm(out_channels, bn_momentum)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):
            # Start the first in_channels filters as identities: a deep stack begins close to a shallow one.
            nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class GlobalMaxPool(nn.Module):
    """``AdaptiveMaxPool2d(1)`` as a plain ``amax``, which every exporter knows; torch 2.11's ONNX exporter has no
    conversion for ``adaptive_max_pool2d``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


@torch.no_grad()
def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
