"""The two networks as plain ``nn.Module``s: no Lightning, no device or precision code.

Both take normalized float images ``(B, 3, 32, 32)`` and return logits ``(B, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cifar_lightning.constants import IMAGE_SHAPE, NUM_CLASSES


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


class MLP(nn.Module):
    """The "basic ANN": flattened pixels through fully connected layers, no convolutions.

    Each hidden layer is Linear -> BatchNorm1d -> GELU -> Dropout; batch norm lets a wide MLP train at a high
    learning rate within a few epochs. With ``whiten``, a frozen transform, set from data by ``set_whitening``,
    decorrelates the 3,072 input pixels first: neighbouring pixels are almost copies of each other, and an MLP
    (unlike a CNN) has no structure that exploits it, so without whitening the first layer spends its few epochs
    undoing that correlation. The transform costs a forward matmul only (nothing before it needs a gradient).

    With ``whiten_dim`` the transform is PCA whitening onto the ``whiten_dim`` directions of largest variance
    instead of ZCA over all 3,072: ZCA is the same scaling followed by a rotation back to pixel space, which a dense
    first layer can learn, and the directions left out are the ones the eps regularizer already all but mutes. The
    transform and the first layer then cost ``3,072 x whiten_dim + whiten_dim x hidden`` multiply-adds per image
    instead of ``3,072 x 3,072 + 3,072 x hidden``.

    Args:
        num_classes: size of the output.
        hidden_sizes: width of each hidden layer, input side first.
        drop_rate: dropout probability after each hidden layer.
        whiten: whiten the input with a frozen transform set by ``set_whitening``.
        whiten_eps: added to the covariance's eigenvalues: larger values whiten fine detail (and noise) less.
        whiten_dim: keep this many principal directions (PCA whitening); None for ZCA over every pixel.
    """

    whitened: Tensor
    input_mean: Tensor
    input_whitening: Tensor

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        hidden_sizes: Sequence[int] = (1024, 512),
        drop_rate: float = 0.2,
        whiten: bool = False,
        whiten_eps: float = 10.0,
        whiten_dim: int | None = None,
    ) -> None:
        super().__init__()
        width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        check_sizes("hidden_sizes", hidden_sizes, drop_rate, num_classes)
        if whiten_dim is not None and not 0 < whiten_dim <= width:
            raise ValueError(f"whiten_dim must be between 1 and {width} (or None for ZCA), got {whiten_dim}.")
        self.whiten, self.whiten_eps, self.whiten_dim = whiten, whiten_eps, whiten_dim
        self.register_buffer("whitened", torch.tensor(False))
        if whiten:
            self.register_buffer("input_mean", torch.zeros(width))
            self.register_buffer("input_whitening", torch.eye(width)[:, : whiten_dim or width])
            width = whiten_dim or width
        layers: list[nn.Module] = []
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.GELU(), nn.Dropout(drop_rate)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if self.whiten:
            x = (x - self.input_mean) @ self.input_whitening
        return self.layers(x)

    @torch.no_grad()
    def whitening_statistics(self, images: Tensor) -> Tensor:
        """``E[v v^T]`` of ``v = (pixels, 1)``: mean and covariance in one matrix that averages across processes."""
        v = torch.cat([images.flatten(1).double(), images.new_ones(len(images), 1, dtype=torch.float64)], dim=1)
        return v.T @ v / len(v)

    @torch.no_grad()
    def set_whitening(self, statistics: Tensor) -> None:
        mean = statistics[-1, :-1]
        covariance = statistics[:-1, :-1] - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        pca = eigenvectors * (eigenvalues.clamp(min=0) + self.whiten_eps).rsqrt()  # column i: direction i, scaled
        # ZCA rotates back to pixel space (symmetric: x @ zca == zca @ x); PCA keeps the strongest directions, first
        transform = pca @ eigenvectors.T if self.whiten_dim is None else pca[:, -self.whiten_dim :].flip(1)
        self.input_mean.copy_(mean)
        self.input_whitening.copy_(transform)
        self.whitened.fill_(True)


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


class CNN(nn.Module):
    """Convolutions, batch norm, max-pooling and dropout: a 2x2 patch stem, then one ``ConvBlock`` per width.

    The stem maps each 2x2 patch to ``2 * 12`` channels. With ``whiten`` its weight is frozen and set once, from
    data, by ``set_whitening`` (the training wrapper does this when training starts); ``whitened`` records that, so
    a resumed run never whitens twice. Three blocks pool the 31x31 stem output to 3x3, and a global max-pool gives one
    vector per image.

    Args:
        num_classes: size of the output.
        widths: output channels of each block; ``(64, 256, 256)`` is three blocks.
        drop_rate: dropout probability before the classifier.
        bn_momentum: batch-norm running-statistics momentum (PyTorch convention).
        head_scale: multiplies the logits; a small value lets the head use a large learning rate stably.
        whiten: freeze the stem and expect it to be set by ``set_whitening``; otherwise the stem is learned.
    """

    whitened: Tensor

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        widths: Sequence[int] = (96, 384, 384),
        drop_rate: float = 0.0,
        bn_momentum: float = 0.4,
        head_scale: float = 1 / 9,
        whiten: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) < 1:
            raise ValueError(f"widths needs at least one block width, got {list(widths)}.")
        check_sizes("widths", widths, drop_rate, num_classes)
        stem_width = 2 * IMAGE_SHAPE[0] * 2 * 2
        self.stem = nn.Conv2d(IMAGE_SHAPE[0], stem_width, 2, bias=True)
        self.whiten = whiten
        self.stem.weight.requires_grad_(not whiten)
        self.register_buffer("whitened", torch.tensor(False))
        self.blocks = nn.Sequential(
            *(ConvBlock(w_in, w_out, bn_momentum) for w_in, w_out in pairwise((stem_width, *widths)))
        )
        self.head = nn.Sequential(
            GlobalMaxPool(), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(widths[-1], num_classes, bias=False)
        )
        self.head_scale = head_scale
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.act(self.stem(x)))) * self.head_scale

    @torch.no_grad()
    def whitening_statistics(self, images: Tensor) -> Tensor:
        """The ``(12, 12)`` second-moment matrix of the 2x2 patches of normalized ``images`` ``(N, 3, H, W)``."""
        patches = images.double().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.stem.in_channels * 4)  # (patches, C*2*2)
        return patches.T @ patches / len(patches)

    @torch.no_grad()
    def set_whitening(self, statistics: Tensor, eps: float = 5e-4) -> None:
        """Sets the stem to the whitening transform of patches with these statistics, and its negation.

        Whitened inputs give every direction of the patch space the same scale, so the first block learns from the
        start instead of spending epochs rescaling its input (airbench measured this as its largest single gain).
        """
        eigenvalues, eigenvectors = torch.linalg.eigh(statistics.double())
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, *self.stem.weight.shape[1:])
        self.stem.weight.copy_(torch.cat([filters, -filters]).to(self.stem.weight.dtype))
        self.whitened.fill_(True)


@torch.no_grad()
def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
