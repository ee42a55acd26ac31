"""Batched augmentation and normalization that run on whatever device the batch is on.

Per-sample torchvision transforms cost a Python call per image per transform; here a whole batch is cropped and
flipped with one gather over uint8 pixels (a quarter of the bytes of float32), then converted and normalized in one
pass. ``benchmarks/data_pipeline.py`` measures the difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(images: Tensor, padding: int = 4, flip: bool = True) -> Tensor:
    """Random translation by up to ``padding`` pixels (zero fill) and a random horizontal flip, per sample.

    Equivalent to torchvision's ``RandomCrop(size, padding=padding)`` followed by ``RandomHorizontalFlip()`` applied to
    each image independently, but done as a single gather for the whole batch.

    Args:
        images: ``(B, C, H, W)`` tensor of any dtype.
        padding: largest shift in pixels; 0 turns the crop off.
        flip: whether to flip half of the images left-right.

    Returns:
        A new ``(B, C, H, W)`` tensor, same dtype and device.
    """
    b, c, h, w = images.shape
    if padding == 0 and not flip:
        return images
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    padded_w = w + 2 * padding
    dev = images.device
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=dev)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1) + dy  # (B, H, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w).expand(b, 1, w)  # (B, 1, W)
    if flip:
        mirrored = torch.rand(b, 1, 1, device=dev) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    cols = cols + dx
    # One flat index per output pixel into the padded image, shared by all channels.
    index = (rows * padded_w + cols).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def normalize(images: Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Tensor:
    """uint8 pixels ``(B, C, H, W)`` to float32, scaled to 0..1 and, if ``mean``/``std`` are given, standardized.

    ``(x / 255 - mean) / std`` is folded into one multiply-subtract so the batch is traversed once after conversion.
    """
    out = images.to(torch.float32)
    if mean is None or std is None:
        return out.mul_(1 / 255)
    shape = (1, -1, 1, 1)
    scale = torch.tensor([1 / (255 * s) for s in std], device=out.device).view(shape)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], device=out.device).view(shape)
    return out.mul_(scale).sub_(shift)
