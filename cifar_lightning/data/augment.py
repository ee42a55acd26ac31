"""Batched augmentation and normalization that run on whatever device the batch is on.

Per-sample torchvision transforms cost a Python call per image per transform; here a whole batch is cropped and
flipped with one gather over uint8 pixels (a quarter of the bytes of float32), then converted and normalized in one
pass. ``benchmarks/data_pipeline.py`` measures the difference.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import torch
from torch import Tensor

PaddingMode = Literal["constant", "reflect"]


PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)


def random_crop_flip(
    images: Tensor, padding: int = 4, flip: bool = True, padding_mode: PaddingMode = "constant"
) -> Tensor:
    """Random translation by up to ``padding`` pixels and a random horizontal flip, per sample.

    Equivalent to torchvision's ``RandomCrop(size, padding=padding, padding_mode=padding_mode)`` followed by
    ``RandomHorizontalFlip()`` applied to each image independently, but done as a single gather for the whole batch.

    Args:
        images: ``(B, C, H, W)`` tensor of any dtype.
        padding: largest shift in pixels; 0 turns the crop off.
        flip: whether to flip half of the images left-right.
        padding_mode: what fills the pixels shifted in: ``"constant"`` zeros (torchvision's default) or ``"reflect"``
            the image mirrored at its border (airbench's choice; no black bars, so a shifted image stays a plausible
            photo). Either fill is folded into a lookup table, so neither needs a padded copy of the batch.

    Returns:
        A new ``(B, C, H, W)`` tensor, same dtype and device.
    """
    b, c, h, w = images.shape
    if padding == 0 and not flip:
        return images
    if problem := padding_problem(padding, padding_mode, min(h, w)):
        raise ValueError(problem + ".")
    # One draw per image picks its (dy, dx, mirrored) at once: uniform over the table's rows, so the three are
    # independent and uniform, as in torchvision. Looking the pixel indices up is cheaper than computing them
    # (benchmarks/data_pipeline.py measures it).
    table, keep = _crop_flip_table(h, w, padding, flip, padding_mode == "reflect", images.device)
    choice = torch.randint(0, len(table), (b,), device=images.device)
    index = table.index_select(0, choice).view(b, 1, h * w).expand(b, c, h * w)  # shared by all channels
    out = images.flatten(2).gather(2, index)
    if keep is not None:  # zero padding: blank the pixels shifted in (a multiply, far cheaper than masked_fill_)
        out.mul_(keep.index_select(0, choice).to(out.dtype))
    return out.view(b, c, h, w)


def color_jitter(x: Tensor, strength: float) -> Tensor:
    """Per image, in place: ``(x + shift) * scale``, with ``shift`` uniform in +-``strength`` (brightness) and
    ``scale`` uniform in ``1 +- strength`` (contrast about the dataset mean, the zero of normalized inputs).

    hiverge's cifar10-speedrun added this to airbench94_muon (0.15 each); two multiply-adds per pixel, no copy.
    """
    draws = torch.rand(2, len(x), 1, 1, 1, device=x.device, dtype=x.dtype).mul_(2 * strength).sub_(strength)
    return x.add_(draws[0]).mul_(draws[1].add_(1))


def padding_problem(padding: int, padding_mode: str, size: int, prefix: str = "") -> str | None:
    """What is wrong with this padding for images of side ``size``, or None; ``prefix`` names the caller's argument."""
    if padding_mode not in PADDING_MODES:
        return f"{prefix}padding_mode must be {' or '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}"
    if padding_mode == "reflect" and padding >= size:  # reflection can only mirror pixels the image has
        return f"reflect padding needs {prefix}padding < {size}, got {padding!r}"
    return None


@functools.lru_cache(maxsize=16)
def _crop_flip_table(
    h: int, w: int, padding: int, flip: bool, reflect: bool, device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """Flat pixel indices into the unpadded image, ``(choices, h * w)``, one row per (dy, dx[, mirrored]) choice;
    and for zero padding a ``(choices, 1, h * w)`` uint8 mask, 0 where a pixel falls outside the image (else None).

    Indexing the unpadded image skips a padded copy of every batch (benchmarks/RESULTS.md has what it saved).
    A constant (1.3 MB for 32x32 with 4-pixel shifts and flips), cached per device so each batch only looks it up.
    """
    shifts = torch.arange(-padding, padding + 1, device=device)
    rows = torch.arange(h, device=device).view(1, 1, 1, h, 1) + shifts.view(-1, 1, 1, 1, 1)  # (dy, 1, 1, h, 1)
    cols = torch.arange(w, device=device)
    mirrors = torch.stack([cols, w - 1 - cols] if flip else [cols])  # (mirrored, w)
    cols = mirrors.view(1, 1, -1, 1, w) + shifts.view(1, -1, 1, 1, 1)  # (1, dx, mirrored, 1, w)
    if reflect:  # coordinate -> source pixel: -1 -> 1, size -> size - 2 (reflection excludes the edge pixel)
        return (_reflect(rows, h) * w + _reflect(cols, w)).reshape(-1, h * w), None
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(-1, h * w)
    if keep.all():  # flips only (padding 0): nothing falls outside, so no mask to multiply by
        return index, None
    return index, keep.reshape(-1, 1, h * w).to(torch.uint8)


def _reflect(coords: Tensor, size: int) -> Tensor:
    coords = coords.abs()
    return torch.where(coords > size - 1, 2 * (size - 1) - coords, coords)


def normalize(images: Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Tensor:
    """uint8 pixels ``(B, C, H, W)`` to float32, scaled to 0..1 and, if ``mean``/``std`` are given, standardized.

    ``(x / 255 - mean) / std`` is folded into one multiply-subtract so the batch is traversed once after conversion.
    """
    out = images.to(torch.float32)
    if mean is None or std is None:
        return out.mul_(1 / 255)
    scale, shift = _affine(tuple(mean), tuple(std), out.device)
    return out.mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel scale ``1 / (255 std)`` and shift ``mean / std``, built once per device."""
    shape = (1, -1, 1, 1)
    scale = torch.tensor([1 / (255 * s) for s in std], device=device).view(shape)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], device=device).view(shape)
    return scale, shift
