"""The CNN: ``CNN``, airbench94's network shape (a frozen whitening stem, three conv blocks, a global max-pool), and
``CNNClassifier``, the LightningModule that trains it with its recipe's defaults and progressive resizing."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cifar_lightning.constants import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.layers import ConvBlock, GlobalMaxPool, check_sizes
from cifar_lightning.models.progress import training_progress


class CNN(nn.Module):
    """Convolutions, batch norm, max-pooling and dropout: a 2x2 patch stem, then one ``ConvBlock`` per width.

    The stem maps each 2x2 patch to ``2 * 12`` channels. With ``whiten`` its weight is frozen and set once, from
    data, by ``set_whitening`` (the training wrapper does this when training starts); ``whitened`` records that, so
    a resumed run never whitens twice. Three blocks pool the 31x31 stem output to 3x3, and a global max-pool gives one
    vector per image. The tuned values are ``CNNClassifier``'s defaults (written there only), so every argument but
    ``num_classes`` is required here.

    Args:
        widths: output channels of each block; ``(64, 256, 256)`` is three blocks.
        drop_rate: dropout probability before the classifier.
        bn_momentum: batch-norm running-statistics momentum (PyTorch convention).
        head_scale: multiplies the logits; a small value lets the head use a large learning rate stably.
        whiten: freeze the stem and expect it to be set by ``set_whitening``; otherwise the stem is learned.
        num_classes: size of the output.
    """

    whitened: Tensor

    def __init__(
        self,
        widths: Sequence[int],
        drop_rate: float,
        bn_momentum: float,
        head_scale: float,
        whiten: bool,
        num_classes: int = NUM_CLASSES,
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


class CNNClassifier(CIFAR10Classifier):
    """The CNN (``CNN``) trained by the shared ``CIFAR10Classifier``: the network's arguments and how training feeds
    it (layout, compilation, progressive resizing); the training values (``lr``, ``optimizer``, ...) are the base's,
    by keyword (``kwargs``). The tuned recipe, ``python train.py --model cnn``, is ``configs/cnn.yaml``: in your own
    code, ``CNNClassifier(**recipe_args("cnn"))`` (``cifar_lightning.run.recipes``).

    Args:
        widths: channels of each conv block.
        drop_rate: dropout before the classifier.
        bn_momentum: batch-norm running-statistics momentum.
        head_scale: multiplier of the logits.
        whiten: set the stem from the data and freeze it, instead of learning it.
        channels_last: keep weights and activations in NHWC, the layout fast convolution kernels want on CPUs
            (oneDNN) and on tensor-core GPUs.
        compile: ``torch.compile`` the network when the Trainer sets the model up (fuses batch norm, activation and
            pooling into fewer kernels on GPUs; the first steps pay for the compilation). On CPUs it measured slower
            (docs/performance.md).
        low_res: progressive resizing: train the first ``low_res_fraction`` of the run on the augmented images
            downscaled to this many pixels a side, then at full size. A step costs about ``(low_res / 32) ** 2`` of a
            full-size one (the convolutions scale with the pixels), and the weights carry over because every layer
            is resolution-agnostic up to the global max-pool. None: full size throughout.
        low_res_fraction: the share of training (of the steps, or of the time budget) spent at ``low_res``.
    """

    net: CNN

    def __init__(
        self,
        widths: Sequence[int] = (96, 384, 384),
        drop_rate: float = 0.0,
        bn_momentum: float = 0.4,
        head_scale: float = 1 / 9,
        whiten: bool = True,
        channels_last: bool = True,
        compile: bool = False,
        low_res: int | None = 20,
        low_res_fraction: float = 0.5625,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        num_classes = self.hparams["num_classes"]
        self.net = CNN(widths, drop_rate, bn_momentum, head_scale, whiten, num_classes)
        smallest = 2 ** len(widths) + 1  # the stem takes one pixel, each block's pooling halves what is left
        if low_res is not None and not smallest <= low_res <= IMAGE_SIZE:
            raise ValueError(
                f"low_res must be between {smallest} (for {len(widths)} blocks) and {IMAGE_SIZE} pixels, got "
                f"{low_res}; or null to train at full size throughout."
            )
        if not 0.0 <= low_res_fraction <= 1.0:
            raise ValueError(f"low_res_fraction is a share of training, from 0 to 1; got {low_res_fraction}.")
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        # nn.Module.compile() compiles in place: parameter names, and so checkpoints, stay those of the plain net.
        if self.hparams["compile"]:
            self.net.compile()

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)

    def _at_low_res(self, progress: float) -> bool:
        return self.hparams["low_res"] is not None and progress < self.hparams["low_res_fraction"]

    def step_cost(self, progress: float) -> float:
        return (self.hparams["low_res"] / IMAGE_SIZE) ** 2 if self._at_low_res(progress) else 1.0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.hparams["low_res"] is not None and self._at_low_res(training_progress(self.trainer)[0]):
            # antialiased, as a camera would see the scene at that size: plain bilinear would alias the fine detail
            x = F.interpolate(x, size=self.hparams["low_res"], mode="bilinear", antialias=True)
        return super().training_step((x, y), batch_idx)
