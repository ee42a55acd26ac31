"""The cost model behind a run's estimate and its time budget: what a training step, an epoch, a validation and a
TTA evaluation cost, in seconds or relative to a full-size step. Pure functions of the model's ``CostAware``
interface and of the Trainer's settings; ``estimate.CostReport`` measures the speeds they scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import lightning as L

# Evaluating one view of an image costs about a third of training on it: no backward pass, which costs about two
# forwards (benchmarks/throughput.py measures the ratio; the MLP's, whose step is mostly fixed costs, is smaller).
EVAL_COST_PER_VIEW = 1 / 3

# Seconds no step measures, timed on 2 real-AVX2 cores, the slow class (benchmarks/RESULTS.md, 2026-12-07): the
# test split's loading and the best checkpoint's restore before a test, and the interpreter's exit after main()
# (4.2 to 4.4 s until train.py froze the garbage collector's objects; 0.6 to 0.7 s since, "2026-12-07, night").
TEST_SETUP_SECONDS = 1.5
EXIT_SECONDS = 0.7


@runtime_checkable
class CostAware(Protocol):
    """A LightningModule that says what its work costs (``models.classifier.CIFAR10Classifier`` does):
    ``step_cost(progress)`` is a training step's cost at that fraction of training relative to a full-size step (it
    varies under progressive resizing), and ``tta_passes(level)`` the forward passes per image a TTA evaluation costs;
    ``tta_level()`` and ``limit_tta(level)`` let a time budget choose a cheaper final evaluation."""

    def step_cost(self, progress: float) -> float: ...

    def tta_passes(self, level: int | None = None) -> float: ...

    def tta_level(self) -> int: ...

    def limit_tta(self, level: int | None) -> None: ...


@runtime_checkable
class AfterFitCost(Protocol):
    """A callback with work after fit that no step measures (``report.export.ExportBest``, ``report.figures.
    RunFigures``): ``after_fit_seconds(test)`` is how long it expects to take, with or without a test after fit."""

    def after_fit_seconds(self, test: bool) -> float: ...


def after_fit_seconds(callbacks: list[L.Callback], test: bool) -> float:
    """Seconds of what follows fit and is not measured: the callbacks' exports and figures, loading the test split,
    and the interpreter's exit."""
    work = sum(c.after_fit_seconds(test) for c in callbacks if isinstance(c, AfterFitCost))
    return work + (TEST_SETUP_SECONDS if test else 0.0) + EXIT_SECONDS


def step_cost(pl_module: L.LightningModule, progress: float) -> float:
    return pl_module.step_cost(progress) if isinstance(pl_module, CostAware) else 1.0


def average_to_end(f: Callable[[float], float], start: float, samples: int = 200) -> float:
    """The mean of ``f`` over the rest of training, from the fraction ``start`` to 1 (midpoint rule)."""
    width = (1.0 - start) / samples
    return sum(f(start + (i + 0.5) * width) for i in range(samples)) / samples if width > 0 else f(1.0)


def speedup(pl_module: L.LightningModule, start: float = 0.0) -> float:
    """How many times a full-size step's images per second the run trains from the fraction ``start`` to its end, on
    a clock's pacing (progressive resizing: more, cheaper steps while the images are small)."""
    return average_to_end(lambda p: 1 / step_cost(pl_module, p), start)


def one_epoch_seconds(images: float, seconds_per_image: float, pl_module: L.LightningModule) -> float:
    """Training time of a run that sees ``images`` once, at ``seconds_per_image`` per full-size image: under
    progressive resizing its steps are cheaper for the low-resolution share of the run, wherever it ends."""
    return images * seconds_per_image / speedup(pl_module)


@dataclass
class Workload:
    """What is left to compute, in images, and how fast a training image goes."""

    train_images: int  # training images still to see
    val_images_per_check: int  # images in one validation
    val_checks: int  # single-view validations still to run (the last one uses TTA)
    tta_views: float  # forward passes per image in the final validation and the test, on average
    test_images: int  # 0 where there is no test split
    seconds_per_train_image: float


def estimate_seconds(work: Workload) -> dict[str, float]:
    """Seconds of the rest of fit (training, validations, the final TTA validation) and of the test."""
    per_view = work.seconds_per_train_image * EVAL_COST_PER_VIEW
    validation = work.val_images_per_check * per_view * (max(0, work.val_checks - 1) + work.tta_views)
    fit = work.train_images * work.seconds_per_train_image + validation
    return {"fit": fit, "test": work.test_images * per_view * work.tta_views}


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def validations_left(trainer: L.Trainer) -> int:
    """Validations the rest of fit runs: one every ``check_val_every_n_epoch`` epochs, and one at the end."""
    every, last = trainer.check_val_every_n_epoch or 1, trainer.max_epochs or 1
    return sum((epoch + 1) % every == 0 or epoch == last - 1 for epoch in range(trainer.current_epoch, last))
