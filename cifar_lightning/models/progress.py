"""How far training has come, as the model sees it, and the error it raises when training diverges.

The model layer defines the interface and the run layer implements it: ``TrainingClock`` is a callback that measures
training by something other than the step count (``run.budget.TimeBudget``: the share of a wall-clock budget used).
With one on the Trainer, the learning-rate schedule, lookahead, progressive resizing and the final TTA validation
follow its ``progress`` and ``final``; without one, the step count.
"""

from __future__ import annotations

import lightning as L


class TrainingClock(L.Callback):
    """A callback that drives the schedule: ``progress`` runs from 0 to 1 over training, ``final`` marks its last
    step. Subclasses update both (``run.budget.TimeBudget`` from the wall clock) before each step's learning rate is
    read."""

    progress: float = 0.0
    final: bool = False

    @staticmethod
    def of(trainer: L.Trainer | None) -> TrainingClock | None:
        found = [c for c in trainer.callbacks if isinstance(c, TrainingClock)] if trainer is not None else []  # type: ignore[attr-defined]
        return found[0] if found else None


def validate_this_epoch(trainer: L.Trainer) -> int | None:
    """Makes the current epoch end with a validation, and returns the ``check_val_every_n_epoch`` it replaced (to
    restore when fit ends). Lightning validates only the epochs that setting divides, but a run's last validation
    (with TTA) is its result, whichever epoch a step count or a budget ends."""
    replaced = trainer.check_val_every_n_epoch
    trainer.check_val_every_n_epoch = 1  # as Lightning's own fast_dev_run sets it
    return replaced


def training_progress(trainer: L.Trainer) -> tuple[float, bool]:
    """The fraction of training done, and whether it is over: of the time budget if one is set, else of the steps.
    The learning rate, lookahead's pull, progressive resizing and the cost estimate all follow it."""
    if clock := TrainingClock.of(trainer):
        return clock.progress, clock.final
    step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
    return step / total, step >= total


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite (``loss`` None: on another rank); the message names the step and the
    likely causes."""

    def __init__(self, loss: float | None, step: int, epoch: int, lr: float, precision: str) -> None:
        advice = f"a learning rate too high for this model (lr={lr}: try --model.lr {lr / 4:g})"
        if precision != "32-true":
            advice += f", or an overflow in reduced precision ({precision}: try --trainer.precision 32-true)"
        value = "NaN or infinite on another rank" if loss is None else loss
        super().__init__(
            f"train/loss became {value} at step {step} (epoch {epoch}); stopping instead of training on garbage. "
            f"Likely causes: {advice}."
        )
