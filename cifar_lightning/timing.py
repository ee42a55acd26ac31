"""Wall-clock awareness: a run that says what it will cost, and a schedule that fits a time budget.

- ``CostReport`` prints what the run computes on, and after a few training steps (timed as they run) what the whole
  run will cost (``estimate_seconds``: fit with its validations and TTA, then test); ``callbacks.RunSummary``
  records both in ``results.json``.
- ``TimeBudget`` makes the recipe follow the clock: warm-up, decay, lookahead and the final TTA evaluation are driven
  by the fraction of the budget used instead of the step count, so any machine, fast or slow, ends on a fully
  annealed model when the budget ends, evaluation included. (Lightning's ``max_time`` stops a run mid-schedule.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from cifar_lightning.augment import TTA_VIEWS
from cifar_lightning.constants import TEST_SIZE
from cifar_lightning.hardware import describe, hardware_info

# Evaluating one view of an image costs about a third of training on it: no backward pass, which costs about two
# forwards (benchmarks/throughput.py measures the ratio; the MLP's, whose step is mostly fixed costs, is smaller).
EVAL_COST_PER_VIEW = 1 / 3


@runtime_checkable
class VariableStepCost(Protocol):
    """A LightningModule whose training steps cost differently along the run (progressive resizing):
    ``step_cost(progress)`` is a step's cost at that fraction of training, relative to a full-size step."""

    def step_cost(self, progress: float) -> float: ...


def step_cost(pl_module: L.LightningModule, progress: float) -> float:
    return pl_module.step_cost(progress) if isinstance(pl_module, VariableStepCost) else 1.0


def average_to_end(f: Callable[[float], float], start: float, samples: int = 200) -> float:
    """The mean of ``f`` over the rest of training, from the fraction ``start`` to 1 (midpoint rule)."""
    width = (1.0 - start) / samples
    return sum(f(start + (i + 0.5) * width) for i in range(samples)) / samples if width > 0 else f(1.0)


def seconds_since_process_start() -> float:
    """How long this process has run (imports included), from /proc on Linux; 0 where that is unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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


class TimeBudget(L.Callback):
    """Runs the schedule on wall-clock time: the run ends, annealed and evaluated, within ``minutes``.

    ``progress`` (0 to 1) replaces ``step / total_steps`` in the learning-rate schedule and lookahead. It is the
    share of the training window used so far, where the window is the budget less what the final TTA validation and
    the test are estimated to cost (from the measured speed). The step that brings ``progress`` to 1 is the last:
    ``final`` is set, lookahead copies its average in, and the validation that follows uses TTA. The epoch count is
    ignored (``max_epochs`` becomes unlimited). The clock starts with the process (``from_process_start``, as
    ``train.py`` sets it) or with this object; a resumed run carries the time its earlier part used (saved in the
    checkpoint).

    Args:
        minutes: the whole run's wall time, start to exit.
        from_process_start: count from the start of this process (``train.py``: imports and data loading count),
            rather than from this object's creation (a notebook, whose kernel started long before).
        reserve_fraction: share of the budget kept for what is not estimated (checkpoints, export, figures) ...
        min_reserve_seconds: ... and at least this many seconds of it.
        clock: seconds from an arbitrary origin (tests pass a fake one).
    """

    def __init__(
        self,
        minutes: float,
        from_process_start: bool = False,
        reserve_fraction: float = 0.03,
        min_reserve_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not minutes > 0:
            raise ValueError(f"time_budget must be a positive number of minutes, got {minutes!r}.")
        self.seconds, self.clock = minutes * 60, clock
        self.reserve = max(min_reserve_seconds, reserve_fraction * self.seconds)
        self.origin = clock() - (seconds_since_process_start() if from_process_start else 0.0)
        self.progress, self.final = 0.0, False
        self.tail = 0.0  # estimated seconds of the final validation and the test (set by RunSummary)
        self._last: float | None = None  # the clock at the last step (None after a validation)
        self._step_seconds = 0.0  # one step's duration
        self._steps = 0  # steps this process has trained

    @staticmethod
    def of(trainer: L.Trainer | None) -> TimeBudget | None:
        found = [c for c in trainer.callbacks if isinstance(c, TimeBudget)] if trainer is not None else []  # type: ignore[attr-defined]
        return found[0] if found else None

    def elapsed(self) -> float:
        return self.clock() - self.origin

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            trainer.fit_loop.max_epochs = -1  # the budget, not an epoch count, ends the run

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = self.clock()

    def window(self) -> float:
        """Seconds from the origin to the end of training: the budget less the reserve and the tail."""
        return self.seconds - self.reserve - self.tail

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Here, not at the batch's end: Lightning steps the learning-rate scheduler right after the optimizer, so
        # the progress set now is what the next step's learning rate reads.
        now = self.clock()
        if self._last is not None:  # None right after a validation, whose time is not a step's
            self._step_seconds = now - self._last
        self._last = now
        elapsed, window = now - self.origin, self.window()
        # The next step would end after the window: this one is the last, and the schedule ends with it.
        final = elapsed + self._step_seconds > window
        progress = 1.0 if final else min(1.0, (elapsed + self._step_seconds) / window)  # at the next step's end
        self.progress, self.final = _same_on_every_rank(trainer, (max(self.progress, progress), final))
        self._steps += 1
        if self.final:
            trainer.should_stop = True
            if self._steps == 1:
                rank_zero_warn(
                    f"time_budget {self.seconds / 60:g} was used up before training started: {elapsed:.0f} s had "
                    f"passed (imports, data loading, or the earlier part of a resumed run) against a "
                    f"{max(0.0, window):.0f} s window, so this run trains one step, then evaluates. Give a longer "
                    "time budget."
                )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "progress": self.progress}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A resumed run continues the earlier one's clock: its elapsed time counts against the budget.
        self.origin = self.clock() - float(state_dict["elapsed"])
        self.progress = float(state_dict["progress"])


def _same_on_every_rank(trainer: L.Trainer, decision: tuple[float, bool]) -> tuple[float, bool]:
    """Rank 0's decision everywhere: ranks read slightly different clocks, and a learning rate or a stop that
    differs between DDP ranks would make their weights drift apart or leave one rank waiting for the others."""
    if trainer.world_size == 1:
        return decision
    return trainer.strategy.broadcast(decision, src=0)


def validate_this_epoch(trainer: L.Trainer) -> int | None:
    """Makes the current epoch end with a validation, and returns the ``check_val_every_n_epoch`` it replaced (to
    restore when fit ends). Lightning validates only the epochs that setting divides, but a run's last validation
    (with TTA) is its result, whichever epoch a step count or a budget ends."""
    replaced = trainer.check_val_every_n_epoch
    trainer.check_val_every_n_epoch = 1  # as Lightning's own fast_dev_run sets it
    return replaced


def validations_left(trainer: L.Trainer) -> int:
    """Validations the rest of fit runs: one every ``check_val_every_n_epoch`` epochs, and one at the end."""
    every, last = trainer.check_val_every_n_epoch or 1, trainer.max_epochs or 1
    return sum((epoch + 1) % every == 0 or epoch == last - 1 for epoch in range(trainer.current_epoch, last))


def training_progress(trainer: L.Trainer) -> tuple[float, bool]:
    """The fraction of training done, and whether it is over: of the time budget if one is set, else of the steps.
    The learning rate, lookahead's pull, progressive resizing and the cost estimate all follow it."""
    if budget := TimeBudget.of(trainer):
        return budget.progress, budget.final
    step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
    return step / total, step >= total


class CostReport(L.Callback):
    """Says what the run computes on and what it will cost, and keeps a ``TimeBudget``'s tail estimate current.

    At setup: the hardware line (``hardware.describe``). Training steps ``warmup_steps`` to ``warmup_steps +
    measured_steps`` are timed as they run (no extra pass); one line then projects the wall time of the whole run,
    or, under a time budget, how many epochs the budget fits. When later steps cost differently (progressive
    resizing's switch to full size), they are timed the same way and a second line revises the projection: the
    first could only scale the small steps by their pixels. ``record`` holds ``hardware``, ``estimate``,
    ``estimate_revised`` and ``time_budget_minutes`` for ``results.json``.

    Args:
        test_follows: a test on the data's test split comes after fit (``train.py`` without a subcommand sets it);
            the estimate, and a budget's reserve, then include it.
        long_run_minutes: on a CPU, a projected run longer than this prints the faster options.
    """

    # The first steps at a new image size pay for whitening, memory growth and kernel selection: after progressive
    # resizing's switch, three of them ran slower than the rest (benchmarks/RESULTS.md, "a fourth round").
    warmup_steps, measured_steps = 3, 3

    def __init__(self, test_follows: bool = False, long_run_minutes: float = 15.0) -> None:
        self.test_follows, self.long_run_minutes = test_follows, long_run_minutes
        self.record: dict[str, Any] = {}
        self._step_end = self._val_start = self._fit_start = 0.0
        self._step_times: list[float] = []
        self._cost: float | None = None  # cost of the steps being timed, relative to a full-size step
        self._next_cost = 1.0  # cost of the step now running (step_cost at its progress)
        self._warm = 0  # steps run at self._cost so far, up to warmup_steps
        self._batch = 1  # training images per step, over all ranks
        self._measured_per_image = 0.0  # one training image, as measured
        self._seconds_per_image: float | None = None  # one full-size training image (see VariableStepCost)
        self._eval_per_view: float | None = None  # one image, one view, in a single-view validation, measured

    @staticmethod
    def of(trainer: L.Trainer | None) -> CostReport | None:
        found = [c for c in trainer.callbacks if isinstance(c, CostReport)] if trainer is not None else []  # type: ignore[attr-defined]
        return found[0] if found else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if "hardware" in self.record:  # once per run: fit and its test share the machine
            return
        device, precision = trainer.strategy.root_device.type, str(trainer.precision)
        self.record["hardware"] = hardware_info(device, precision)
        rank_zero_info(describe(device, precision, self.record["hardware"]))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        budget = TimeBudget.of(trainer)
        self.record["time_budget_minutes"] = budget.seconds / 60 if budget else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_end = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._next_cost = step_cost(pl_module, training_progress(trainer)[0])  # as the step itself will read it

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._next_cost != self._cost:
            # the first step, or the first of a different cost (progressive resizing's switch to full size): the
            # cost ratio is only the pixels' guess, so the new steps are timed too and the projection revised
            self._cost, self._step_times, self._warm = self._next_cost, [], 1
        elif self._warm < self.warmup_steps:
            self._warm += 1
        elif len(self._step_times) < self.measured_steps:
            self._step_times.append(now - self._step_end)
            if len(self._step_times) == self.measured_steps:
                self._batch = len(batch[1]) * trainer.world_size
                self._measured_per_image = sorted(self._step_times)[1] / len(batch[1])  # median of three
                self._seconds_per_image = self._measured_per_image / self._cost  # as a full-size step would take
                self._project(trainer, pl_module, revised="estimate" in self.record)
        self._step_end = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.training or trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._val_start
        self._step_end += seconds  # a step's time excludes the validation inside it
        budget = TimeBudget.of(trainer)
        if budget is not None and not budget.final:  # a single-view validation: measure evaluation speed
            self._eval_per_view = seconds / max(1, self._val_images(trainer))
            budget.tail = self._tail_seconds(trainer, pl_module)

    def _val_images(self, trainer: L.Trainer) -> int:
        return int(sum(trainer.num_val_batches)) * self._batch  # evaluation batches are as large as training ones

    def _views(self, pl_module: L.LightningModule) -> float:
        """Forward passes per image of a TTA evaluation: all of ``tta_level``'s views for the share of images below
        ``tta_threshold`` at the last single-view validation (all images before the first), one for the rest."""
        views = TTA_VIEWS.get(int(pl_module.hparams.get("tta_level", 0)), 1)
        return 1 + (views - 1) * float(getattr(pl_module, "tta_share", 1.0))

    def _tail_seconds(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """The final TTA validation and the test, from the measured evaluation (or training) speed."""
        per_view = self._eval_per_view or (self._seconds_per_image or 0.0) * EVAL_COST_PER_VIEW
        test = TEST_SIZE if self.test_follows else 0
        return per_view * self._views(pl_module) * (self._val_images(trainer) + test)

    def _project_budget(
        self, trainer: L.Trainer, pl_module: L.LightningModule, budget: TimeBudget, speed: str, key: str, head: str
    ) -> None:
        """Under a time budget: prints and records how many epochs the budget's remaining time fits."""
        assert self._seconds_per_image is not None
        budget.tail = self._tail_seconds(trainer, pl_module)
        # the budget's progress is time: images per second, averaged over the time left, is 1 / cost averaged
        speedup = average_to_end(lambda p: 1 / step_cost(pl_module, p), training_progress(trainer)[0])
        left = budget.window() - budget.elapsed()
        images = max(0.0, left) / self._seconds_per_image * speedup
        batches = max(1, trainer.num_training_batches)
        epochs = (trainer.global_step + images / self._batch) / batches
        label = f"{head}: time budget" if head else "Time budget"
        rank_zero_info(
            f"{label} {format_duration(budget.seconds)}: at {speed} the schedule fits about {epochs:.1f} epochs, "
            "then evaluates."
        )
        if left <= 0:
            rank_zero_warn(
                f"--time_budget {budget.seconds / 60:g} is too short for this run: its final evaluation alone is "
                f"estimated at {format_duration(budget.tail)}, so training ends now, at step {trainer.global_step}, "
                "before its schedule has annealed. Give a longer --time_budget, or a lower --model.tta_level."
            )
        self.record[key] = {"epochs": round(epochs, 2), "at_step": trainer.global_step}

    def _project(self, trainer: L.Trainer, pl_module: L.LightningModule, revised: bool = False) -> None:
        """Prints and records (``estimate``, or ``estimate_revised`` once the steps' cost has changed) the projected
        wall time of the run, or the epochs a time budget fits."""
        assert self._seconds_per_image is not None
        speed = f"{1 / self._measured_per_image:,.0f} training images/s"
        key, head = ("estimate_revised", f"Re-estimated at step {trainer.global_step}") if revised else ("estimate", "")
        if budget := TimeBudget.of(trainer):
            self._project_budget(trainer, pl_module, budget, speed, key, head)
            return
        progress = training_progress(trainer)[0]
        step_at = partial(step_cost, pl_module)  # a step's cost at a given progress, relative to a full-size one
        work = Workload(
            train_images=int(trainer.estimated_stepping_batches - trainer.global_step) * self._batch,
            val_images_per_check=self._val_images(trainer),
            tta_views=self._views(pl_module),
            val_checks=validations_left(trainer),
            test_images=TEST_SIZE if self.test_follows else 0,
            seconds_per_train_image=self._seconds_per_image * average_to_end(step_at, progress),
        )
        cost = estimate_seconds(work)
        total = seconds_since_process_start() + cost["fit"] + cost["test"]
        fit = time.perf_counter() - self._fit_start + cost["fit"]
        test = f", test {format_duration(cost['test'])}" if self.test_follows else ""
        rank_zero_info(
            f"{head or 'Estimated'}: {format_duration(total)} start to exit ({speed}; fit {format_duration(fit)}"
            f"{test})."
        )
        if not revised and trainer.strategy.root_device.type == "cpu" and total > 60 * self.long_run_minutes:
            rank_zero_info(
                f"That is long for a CPU. `--time_budget {self.long_run_minutes:g}` fits this recipe into "
                f"{self.long_run_minutes:g} minutes (fewer epochs, still annealed); for the CNN, `--model cnn_fast` is "
                "the recipe made for CPUs without native bf16."
            )
        self.record[key] = {
            "fit_seconds": round(fit, 2),
            "test_seconds": round(cost["test"], 2),
            "wall_seconds": round(total, 1),
            "at_step": trainer.global_step,
        }
