"""The two networks as plain ``nn.Module``s: no Lightning, no device or precision code.

Both take normalized float images ``(B, 3, 32, 32)`` and return logits ``(B, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from cifar_lightning.constants import IMAGE_SHAPE, NUM_CLASSES


class MLP(nn.Module):
    """The "basic ANN": flattened pixels through fully connected layers, no convolutions.

    Each hidden layer is Linear -> BatchNorm1d -> GELU -> Dropout; batch norm lets a wide MLP train at a high
    learning rate within a few epochs.

    Args:
        num_classes: size of the output.
        hidden_sizes: width of each hidden layer, input side first.
        drop_rate: dropout probability after each hidden layer.
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, hidden_sizes: Sequence[int] = (1024, 512), drop_rate: float = 0.2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.GELU(), nn.Dropout(drop_rate)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def conv_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.GELU()]


class ConvBlock(nn.Sequential):
    """conv -> max-pool (halves H and W) -> BN -> GELU -> conv -> BN -> GELU.

    Pooling right after the first conv, before its batch norm, runs the norm and the second conv at a quarter of the
    pixels (the ordering of airbench's blocks).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        first = conv_bn(in_channels, out_channels)
        super().__init__(first[0], nn.MaxPool2d(2), *first[1:], *conv_bn(out_channels, out_channels))


class CNN(nn.Module):
    """Convolutions, batch norm, max-pooling and dropout: a stem conv, then one ``ConvBlock`` per width.

    With three blocks the 32x32 input is pooled to 4x4, then global max-pooled to one vector per image.

    Args:
        num_classes: size of the output.
        widths: output channels of the stem and of each block: ``(32, 64, 128, 256)`` is a stem of 32 and three
            blocks.
        drop_rate: dropout probability before the classifier.
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, widths: Sequence[int] = (32, 64, 128, 256), drop_rate: float = 0.1
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs a stem width and at least one block width, got {list(widths)}.")
        blocks = [ConvBlock(w_in, w_out) for w_in, w_out in pairwise(widths)]
        self.features = nn.Sequential(*conv_bn(IMAGE_SHAPE[0], widths[0]), *blocks)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(widths[-1], num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
