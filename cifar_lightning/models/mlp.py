"""The MLP (the "basic ANN"): ``MLP``, a plain network of PCA-whitened pixels, Linear, BatchNorm and GELU layers, and
``MLPClassifier``, the LightningModule that trains it with its recipe's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cifar_lightning.constants import IMAGE_SHAPE, NUM_CLASSES
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.layers import check_sizes


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

    The tuned values are ``MLPClassifier``'s defaults (written there only), so every argument but ``num_classes`` is
    required here.

    Args:
        hidden_sizes: width of each hidden layer, input side first.
        drop_rate: dropout probability after each hidden layer.
        whiten: whiten the input with a frozen transform set by ``set_whitening``.
        whiten_eps: added to the covariance's eigenvalues: larger values whiten fine detail (and noise) less.
        whiten_dim: keep this many principal directions (PCA whitening); None for ZCA over every pixel.
        num_classes: size of the output.
    """

    whitened: Tensor
    input_mean: Tensor
    input_whitening: Tensor

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        drop_rate: float,
        whiten: bool,
        whiten_eps: float,
        whiten_dim: int | None,
        num_classes: int = NUM_CLASSES,
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
            # Rectangular from the start: a column slice of eye(width) would keep, and every checkpoint and export
            # would save, the whole 3,072 x 3,072 storage it was cut from.
            self.register_buffer("input_whitening", torch.eye(width, whiten_dim or width))
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


class MLPClassifier(CIFAR10Classifier):
    """The "basic ANN" (``MLP``) trained by the shared ``CIFAR10Classifier``: the network's arguments; the training
    values (``lr``, ``tta_level``, ...) are the base's, by keyword (``kwargs``). The tuned recipe, ``python train.py
    --model mlp``, is ``configs/mlp.yaml``: in your own code, ``MLPClassifier(**recipe_args("mlp"))``
    (``cifar_lightning.run.recipes``).

    Args:
        hidden_sizes: width of each hidden layer.
        drop_rate: dropout after each hidden layer.
        whiten: whiten the input pixels with a frozen transform set from the first training images.
        whiten_eps: whitening regularizer, added to the covariance eigenvalues of the normalized pixels.
        whiten_dim: whiten onto this many principal directions (PCA), or None for ZCA over all 3,072 pixels.
        kwargs: any ``CIFAR10Classifier`` argument.
    """

    net: MLP

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (1024, 512),
        drop_rate: float = 0.0,
        whiten: bool = True,
        whiten_eps: float = 10.0,
        whiten_dim: int | None = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.net = MLP(hidden_sizes, drop_rate, whiten, whiten_eps, whiten_dim, self.hparams["num_classes"])
