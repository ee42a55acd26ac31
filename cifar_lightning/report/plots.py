"""Figures as pure functions: data in, matplotlib ``Figure`` out. No Trainer, no W&B, no files.

The run-end callback, the W&B logger and ``python -m cifar_lightning.compare`` all draw with these, so a figure looks
the same wherever it appears. Each returns a new Figure; the caller saves or logs it and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, work on machines without a display
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_lightning.constants import MEAN, STD, Normalization

Curve = Sequence[tuple[int, float]]  # (epoch, value) pairs


Accuracies = Mapping[str, Mapping[str, float | None]]  # run -> {metric name: value}


def learning_curves(curves: Mapping[str, Mapping[str, Curve]]) -> Figure:
    """Loss and accuracy per epoch, one line per (run, metric); ``curves[run][metric]`` holds ``(epoch, value)``.

    Metrics named ``*/loss`` go to the left panel and ``*/acc`` to the right one, so one run or several runs
    share the same axes.
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    _draw_curves(loss_ax, acc_ax, curves)
    return fig


def comparison(curves: Mapping[str, Mapping[str, Curve]], accuracies: Accuracies) -> Figure:
    """Several runs in one figure: loss and accuracy curves on shared axes, then their accuracies side by side."""
    fig = Figure(figsize=(17, 4.5), layout="constrained")
    loss_ax, acc_ax, bar_ax = fig.subplots(1, 3)
    _draw_curves(loss_ax, acc_ax, curves)
    _draw_accuracy_bars(bar_ax, accuracies)
    return fig


def _draw_curves(loss_ax: Axes, acc_ax: Axes, curves: Mapping[str, Mapping[str, Curve]]) -> None:
    for run, metrics in curves.items():
        for name, points in sorted(metrics.items()):
            if not points or not name.endswith(("/loss", "/acc")):
                continue
            ax = loss_ax if name.endswith("/loss") else acc_ax
            epochs, values = zip(*points, strict=True)
            style = "--" if name.startswith("train/") else "-"
            label = name if len(curves) == 1 else f"{run} {name}"
            ax.plot(np.asarray(epochs) + 1, values, style, marker="o", markersize=3, label=label)
    for ax, title in ((loss_ax, "loss per epoch"), (acc_ax, "accuracy per epoch")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts (left) and rows normalized to recall (right) of a ``(true, predicted)`` confusion matrix."""
    # Fixed margins, not constrained layout: solving the layout measures every one of the 200 cell labels, which
    # cost 0.45 s of the 1.0 s this figure took to save at the end of every test (2026-12-03, AVX2).
    fig = Figure(figsize=(13, 5.5))
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.17, top=0.94, wspace=0.15)
    rows = matrix.sum(axis=1, keepdims=True)
    normalized = matrix / np.maximum(rows, 1)
    for ax, values, title, fmt in zip(
        fig.subplots(1, 2), (matrix, normalized), ("counts", "row-normalized (recall)"), ("d", ".2f"), strict=True
    ):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(len(classes)), yticks=range(len(classes)))
        ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticklabels(classes, fontsize=8)
        threshold = values.max() / 2
        for (i, j), value in np.ndenumerate(values):
            color = "white" if value > threshold else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=6, color=color)
    return fig


def per_class_bars(values: Mapping[str, Mapping[str, float]], ylabel: str = "test accuracy") -> Figure:
    """Grouped bars: ``values[series][class]``, one group per class (one series per run, or a single run)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    classes = list(next(iter(values.values())).keys()) if values else []
    width = 0.8 / max(1, len(values))
    for i, (series, per_class) in enumerate(values.items()):
        heights = [per_class.get(c, np.nan) for c in classes]
        bars = ax.bar(np.arange(len(classes)) + (i - (len(values) - 1) / 2) * width, heights, width, label=series)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set(ylabel=ylabel, ylim=(0, 1.05), xticks=range(len(classes)))
    ax.set_xticklabels(classes, rotation=30, ha="right")
    if len(values) > 1:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


def mistakes_grid(
    images: np.ndarray,
    true: Sequence[int],
    predicted: Sequence[int],
    confidence: Sequence[float],
    classes: Sequence[str],
    columns: int = 8,
    normalization: Normalization = (MEAN, STD),
) -> Figure:
    """A grid of images ``(N, 3, 32, 32)`` (uint8, or model inputs: floats normalized with ``normalization``, or
    0..1 where it is None) titled ``true -> predicted (confidence)``; red titles mark mistakes."""
    pixels = to_uint8(images, normalization)
    rows = max(1, -(-len(pixels) // columns))
    # One mosaic image on one axes, not an axes per image: 32 axes cost 1.4 s to draw and save at the end of every
    # test, the mosaic 0.34 s (2026-12-03, AVX2). Cells are in image pixels: a 32-pixel image under a 2-line title.
    size, gap, title = pixels.shape[-1], 3, 12
    cell_w, cell_h = size + gap, size + title
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    fig = Figure(figsize=(1.6 * columns, 1.6 * columns * rows * cell_h / (columns * cell_w)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.axis("off")
    for i, (image, t, p, c) in enumerate(zip(pixels, true, predicted, confidence, strict=False)):
        top, left = (i // columns) * cell_h + title, (i % columns) * cell_w + gap // 2
        canvas[top : top + size, left : left + size] = image.transpose(1, 2, 0)
        label, color = f"{classes[t]}\n-> {classes[p]} ({c:.0%})", "red" if t != p else "black"
        ax.text(left + size / 2, top - 1, label, fontsize=7, ha="center", va="bottom", color=color)
    ax.imshow(canvas, interpolation="nearest")
    return fig


def _draw_accuracy_bars(ax: Axes, accuracies: Accuracies) -> None:
    runs = list(accuracies)
    # only the metrics some run has: a legend entry without bars (no test split) says nothing
    metrics = sorted({m for values in accuracies.values() for m, v in values.items() if v is not None})
    width = 0.8 / max(1, len(metrics))
    for i, metric in enumerate(metrics):
        heights = [accuracies[r].get(metric) or np.nan for r in runs]
        bars = ax.bar(np.arange(len(runs)) + (i - (len(metrics) - 1) / 2) * width, heights, width, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1.05), xticks=range(len(runs)), title="final accuracy per run")
    ax.set_xticklabels(runs, rotation=15, ha="right", fontsize=8)
    if metrics:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def to_uint8(images: np.ndarray, normalization: Normalization = (MEAN, STD)) -> np.ndarray:
    """Images as uint8 pixels: uint8 passes through; floats are model inputs, mapped back through ``normalization``
    (the (mean, std) they were normalized with, or None for 0..1)."""
    if images.dtype == np.uint8:
        return images
    mean, std = normalization or ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mean_, std_ = np.asarray(mean).reshape(1, 3, 1, 1), np.asarray(std).reshape(1, 3, 1, 1)
    return np.clip((images * std_ + mean_) * 255 + 0.5, 0, 255).astype(np.uint8)
