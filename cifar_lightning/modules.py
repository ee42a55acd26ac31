"""The models: thin ``CIFAR10Classifier`` subclasses (``classifier.py``) that build their network from ``nets.py``.

They repeat the base's keyword arguments on purpose: LightningCLI reads ``__init__`` signatures, so every knob
appears as a typed flag (``--model.lr``) with a default tuned for that model (``configs/<model>.yaml`` holds the same
values; tests/test_configs.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cifar_lightning.classifier import CIFAR10Classifier, base_arguments
from cifar_lightning.constants import IMAGE_SIZE, NUM_CLASSES
from cifar_lightning.nets import CNN, MLP
from cifar_lightning.optim import OptimizerName, Schedule
from cifar_lightning.timing import training_progress

__all__ = ["CIFAR10Classifier", "CNNClassifier", "MLPClassifier"]


class MLPClassifier(CIFAR10Classifier):
    """The "basic ANN" (``nets.MLP``) with the shared training logic; see ``CIFAR10Classifier`` for the rest.

    Args:
        hidden_sizes: width of each hidden layer.
        drop_rate: dropout after each hidden layer.
        whiten: whiten the input pixels with a frozen transform set from the first training images.
        whiten_eps: whitening regularizer, added to the covariance eigenvalues of the normalized pixels.
        whiten_dim: whiten onto this many principal directions (PCA), or None for ZCA over all 3,072 pixels.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (1024, 512),
        drop_rate: float = 0.0,
        whiten: bool = True,
        whiten_eps: float = 10.0,
        whiten_dim: int | None = 256,
        num_classes: int = NUM_CLASSES,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        optimizer: OptimizerName = "sgd",
        schedule: Schedule = "linear",
        warmup_fraction: float = 0.2,
        label_smoothing: float = 0.0,
        bias_lr_scale: float = 1.0,
        lookahead: bool = False,
        tta_level: int = 1,
        tta_threshold: float = 1.0,
        muon_lr: float = 0.24,
        muon_momentum: float = 0.6,
    ) -> None:
        super().__init__(**base_arguments(locals()))
        self.net = MLP(
            num_classes=num_classes,
            hidden_sizes=hidden_sizes,
            drop_rate=drop_rate,
            whiten=whiten,
            whiten_eps=whiten_eps,
            whiten_dim=whiten_dim,
        )


class CNNClassifier(CIFAR10Classifier):
    """The CNN (``nets.CNN``) with the shared training logic; see ``CIFAR10Classifier`` for the rest.

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
            (README "Results").
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
        num_classes: int = NUM_CLASSES,
        lr: float = 1.0,
        weight_decay: float = 1.3e-3,
        momentum: float = 0.85,
        optimizer: OptimizerName = "muon",
        schedule: Schedule = "linear",
        warmup_fraction: float = 0.23,
        label_smoothing: float = 0.2,
        bias_lr_scale: float = 64.0,
        lookahead: bool = True,
        tta_level: int = 3,
        tta_threshold: float = 0.65,
        muon_lr: float = 0.24,
        muon_momentum: float = 0.6,
    ) -> None:
        super().__init__(**base_arguments(locals()))
        self.net = CNN(num_classes, widths, drop_rate, bn_momentum, head_scale, whiten)
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
        return self.net(x)

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
