"""Test-time augmentation: a model's logits averaged over mirrored and shifted views of each image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TTA_VIEWS = {0: 1, 1: 2, 2: 6, 3: 18}  # forward passes per image at each tta_level (tta_logits)


def tta_logits(model: Callable[[Tensor], Tensor], x: Tensor, level: int, threshold: float = 1.0) -> Tensor:
    """Test-time augmentation: ``model``'s logits averaged over views of normalized images ``x``.

    ``level`` 0 is ``x`` alone, 1 averages ``x`` with its mirror, 2 gives those two half the weight and splits the
    other half between the mirrored pairs shifted by one pixel up-left and down-right, with the border reflected
    (airbench's views and weights: 6 forward passes), 3 weighs ``x`` and its eight one-pixel shifts equally, each
    with its mirror (18 passes). With ``threshold`` below 1, only the images whose single view
    is less confident than that (top softmax probability) get the other views; the rest keep their single-view
    logits. Confident predictions are the ones extra views rarely flip (hiverge's cifar10-speedrun TTAs its least
    confident 15%); deciding per image, not per batch, keeps the result independent of the batch size.
    """
    logits = model(x)
    if level == 0:
        return logits
    if threshold >= 1:
        return _more_views(model, x, logits, level)
    mask = unsure(logits, threshold)
    out = logits.clone()
    if mask.any():  # a batch of confident images skips the extra passes altogether
        out[mask] = _more_views(model, x[mask], logits[mask], level).to(out.dtype)
    return out


def unsure(logits: Tensor, threshold: float) -> Tensor:
    """The images ``tta_logits`` gives its extra views: top softmax probability below ``threshold`` (all at 1)."""
    if threshold >= 1:  # every image, even one whose probability rounds to exactly 1 in bf16
        return torch.ones(len(logits), dtype=torch.bool, device=logits.device)
    return logits.softmax(-1).amax(-1) < threshold


def _more_views(model: Callable[[Tensor], Tensor], x: Tensor, logits: Tensor, level: int) -> Tensor:
    """``tta_logits`` at ``level`` >= 1, given the plain view's ``logits``."""
    logits = (logits + model(x.flip(-1))) / 2
    if level == 1:
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    if level == 2:
        shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
        shifted_logits = sum((model(v) + model(v.flip(-1))) / 4 for v in shifted)
        return (logits + shifted_logits) / 2
    neighbours = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    shifted = [padded[..., dy : dy + h, dx : dx + w] for dy, dx in neighbours]
    return (2 * logits + sum(model(v) + model(v.flip(-1)) for v in shifted)) / 18
