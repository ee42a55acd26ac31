"""A schedule that fits a time budget: ``TimeBudget``, the run layer's ``models.progress.TrainingClock``.

Warm-up, decay, lookahead and the final TTA evaluation are driven by the share of the budget used instead of the step
count, so any machine, fast or slow, ends on a fully annealed model when the budget ends, evaluation included.
(Lightning's ``max_time`` stops a run mid-schedule.)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from cifar_lightning.models.progress import TrainingClock


def seconds_since_process_start() -> float:
    """How long this process has run (imports included), from /proc on Linux; 0 where that is unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class TimeBudgetTooShort(ValueError):
    """A time budget that leaves no time to train: refused after the first step (the first measure of speed),
    before any evaluation; the message names a budget that would train about an epoch."""


class TimeBudget(TrainingClock):
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
        min_reserve_seconds: ... and at least this many seconds of it: what follows fit in ``train.py`` took about 12 s
            for ``cnn_fast`` on 2 real-AVX2 cores (ONNX export 6.2 s, ``.pt2`` 1.6 s, figures 1.3 s, then the
            interpreter's exit, 2.5 s); with 5 s, 2-minute budgets ended 1.5 s past their allowance (2026-12-03).
        max_eval_fraction: the final evaluation (TTA validation and test) may take at most this share of the budget;
            where the model's TTA level would take more, ``estimate.CostReport`` lowers it for this run, from the
            measured evaluation speed.
        clock: seconds from an arbitrary origin (tests pass a fake one).
    """

    def __init__(
        self,
        minutes: float,
        from_process_start: bool = False,
        reserve_fraction: float = 0.03,
        min_reserve_seconds: float = 15.0,
        max_eval_fraction: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not minutes > 0:
            raise ValueError(f"time_budget must be a positive number of minutes, got {minutes!r}.")
        self.seconds, self.clock, self.max_eval_fraction = minutes * 60, clock, max_eval_fraction
        self.reserve_fraction, self.min_reserve_seconds = reserve_fraction, min_reserve_seconds
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

    def minutes_for(self, seconds: float) -> float:
        """The shortest budget, in whole minutes, whose window (less the tail) holds ``seconds`` from the origin."""
        needed = seconds + self.tail
        return math.ceil(max(needed / (1 - self.reserve_fraction), needed + self.min_reserve_seconds) / 60)

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
            if self._steps == 1 and elapsed >= window:
                rank_zero_warn(
                    f"time_budget {self.seconds / 60:g} was used up before training started: {elapsed:.0f} s had "
                    f"passed (imports, data loading, or the earlier part of a resumed run) against a "
                    f"{max(0.0, window):.0f} s window. Give a longer time budget."
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
