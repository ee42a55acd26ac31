"""What a run costs: ``CostReport`` prints what the run computes on, and after a few training steps (timed as they
run) what the whole run will cost (``costs.estimate_seconds``: fit with its validations and TTA, then test);
``results.RunSummary`` records both in ``results.json``. Under a ``budget.TimeBudget`` it keeps the budget's estimate
of the final evaluation current.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from cifar_lightning.constants import TEST_SIZE
from cifar_lightning.models.progress import training_progress
from cifar_lightning.run.budget import TimeBudget, TimeBudgetTooShort, seconds_since_process_start
from cifar_lightning.run.costs import (
    EVAL_COST_PER_VIEW,
    CostAware,
    Workload,
    after_fit_seconds,
    average_to_end,
    estimate_seconds,
    format_duration,
    one_epoch_seconds,
    speedup,
    step_cost,
    validations_left,
)
from cifar_lightning.run.hardware import describe, hardware_info


class CostReport(L.Callback):
    """Says what the run computes on and what it will cost, and keeps a ``TimeBudget``'s tail estimate current.

    At setup: the hardware line (``hardware.describe``). After ``warmup_steps``, ``measured_steps`` training steps
    (more if they are short) are timed as they run (no extra pass); one line then projects the wall time of the run,
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
    # Three short steps (the MLP's 30 ms) are too few to average their spread: on 2 real-AVX2 cores the MLP's 4th to
    # 6th read 8,785 images/s for a run that trained at about 7,000. So short steps are timed until they sum to
    # ``measured_seconds`` (within the first tenth of training), and the projection uses their mean.
    measured_seconds, measured_share = 2.0, 0.1

    def __init__(self, test_follows: bool = False, long_run_minutes: float = 15.0) -> None:
        self.test_follows, self.long_run_minutes = test_follows, long_run_minutes
        self.record: dict[str, Any] = {}
        self._step_end = self._val_start = self._fit_start = 0.0
        self._step_times: list[float] = []
        self._timed = False  # the steps at the current cost have been timed and projected from
        self._cost: float | None = None  # cost of the steps being timed, relative to a full-size step
        self._next_cost = 1.0  # cost of the step now running (step_cost at its progress)
        self._warm = 0  # steps run at self._cost so far, up to warmup_steps
        self._batch = 1  # training images per step, over all ranks
        self._measured_per_image = 0.0  # one training image, as measured
        self._last_per_image: float | None = None  # one full-size training image, in the last step (a fallback)
        self._warned_short = False  # said that the budget is too short for any training
        self._val_batch_start = 0.0
        self._sanity_last: tuple[float, int] | None = None  # the sanity check's last batch: seconds per image, images
        self._steps = 0  # training steps this process has run
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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (budget := TimeBudget.of(trainer)) and self._eval_per_view is not None:
            # the sanity check measured evaluation: size the final one, and refuse a budget without time to train,
            # before the first step
            self._fit_final_evaluation(trainer, pl_module, budget)

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
            self._cost, self._step_times, self._warm, self._timed = self._next_cost, [], 1, False
        elif self._warm < self.warmup_steps:
            self._warm += 1
        elif not self._timed:
            self._step_times.append(now - self._step_end)
            if self._timed_enough(trainer):
                self._measured_per_image = sum(self._step_times) / len(self._step_times) / len(batch[1])
                self._timed = True
                self._seconds_per_image = self._measured_per_image / self._cost  # as a full-size step would take
                self._project(trainer, pl_module, revised="estimate" in self.record)
        self._steps += 1
        self._batch = max(self._batch, len(batch[1]) * trainer.world_size)  # not an epoch's smaller last batch
        self._last_per_image = (now - self._step_end) / len(batch[1]) / (self._cost or 1.0)
        self._step_end = now
        if (budget := TimeBudget.of(trainer)) and self._seconds_per_image is None:
            # Until the first estimate, the last step's speed sizes the final evaluation, so that a budget too short
            # for the first steps reserves it (and chooses its level) too. The first steps are the slowest: this errs
            # towards fewer views, and the estimate decides again.
            self._fit_final_evaluation(trainer, pl_module, budget)

    def _timed_enough(self, trainer: L.Trainer) -> bool:
        """Whether the steps timed so far make a projection: at least ``measured_steps``, more while they sum to less
        than ``measured_seconds``, up to ``measured_share`` of the training steps. Under a time budget, the first
        ``measured_steps``: its decisions (the final evaluation's size, a refusal) cannot wait, and its schedule
        follows the clock whatever the projection says."""
        timed, most = self._step_times, self.measured_share * trainer.estimated_stepping_batches
        if len(timed) < self.measured_steps:
            return False
        return TimeBudget.of(trainer) is not None or sum(timed) >= self.measured_seconds or len(timed) >= most

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self._val_batch_start = time.perf_counter()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking:  # the last batch is the warm one: the first pays for kernel selection
            self._sanity_last = ((time.perf_counter() - self._val_batch_start) / len(batch[1]), len(batch[1]))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # fit's validations (trainer.training is False inside them: their stage is "validate")
        if trainer.state.fn != "fit":
            return
        seconds = time.perf_counter() - self._val_start
        if trainer.sanity_checking:  # a first measure of evaluation speed, before any training
            if self._sanity_last is not None:
                self._eval_per_view, images = self._sanity_last
                self._batch = max(self._batch, images * trainer.world_size)
            return
        self._step_end += seconds  # a step's time excludes the validation inside it
        budget = TimeBudget.of(trainer)
        if budget is not None and not budget.final:  # a single-view validation: measure evaluation speed
            self._eval_per_view = seconds / max(1, self._val_images(trainer))
            self._fit_final_evaluation(trainer, pl_module, budget)

    def _val_images(self, trainer: L.Trainer) -> int:
        return int(sum(trainer.num_val_batches)) * self._batch  # evaluation batches are as large as training ones

    def _views(self, pl_module: L.LightningModule, level: int | None = None) -> float:
        """Forward passes per image of the final (TTA) validation and the test at ``level`` (default: the level the
        module evaluates at); one for a module that does not say."""
        return pl_module.tta_passes(level) if isinstance(pl_module, CostAware) else 1.0

    def _tail_seconds(self, trainer: L.Trainer, pl_module: L.LightningModule, level: int | None = None) -> float:
        """The final TTA validation and the test, from the measured evaluation (or training) speed."""
        per_view = self._eval_per_view or (self._seconds_per_image or self._last_per_image or 0.0) * EVAL_COST_PER_VIEW
        test = TEST_SIZE if self.test_follows else 0
        return per_view * self._views(pl_module, level) * (self._val_images(trainer) + test)

    def _fit_final_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule, budget: TimeBudget) -> None:
        """Sets the budget's tail to the final evaluation at the highest TTA level, up to the configured one, whose
        estimated cost is at most ``budget.max_eval_fraction`` of the budget (the cheapest level where none is):
        a short budget then trains longer and evaluates with fewer views. Decided again at every estimate, so a
        level lowered on the first steps' guess comes back once a validation has measured the real cost."""
        if not isinstance(pl_module, CostAware):
            budget.tail = self._tail_seconds(trainer, pl_module)
            return
        pl_module.limit_tta(None)
        configured = pl_module.tta_level()
        tails = {level: self._tail_seconds(trainer, pl_module, level) for level in range(configured, -1, -1)}
        cap = budget.max_eval_fraction * budget.seconds
        chosen = next((level for level, seconds in tails.items() if seconds <= cap), 0)
        gone = budget.seconds - budget.reserve - tails[chosen] <= budget.elapsed()  # no time left to train
        if trainer.world_size > 1:  # rank 0's clock decides for every rank, as the budget's own decisions do
            chosen, gone = trainer.strategy.broadcast((chosen, gone), src=0)
        pl_module.limit_tta(None if chosen == configured else chosen)
        budget.tail = tails[chosen]
        if chosen != self.record.get("tta_level", configured):
            head = f"Time budget {format_duration(budget.seconds)}: the final evaluation"
            rank_zero_info(
                f"{head} at tta_level {configured} is estimated at {format_duration(tails[configured])}, over "
                f"{budget.max_eval_fraction:.0%} of the budget, so it runs at tta_level {chosen} "
                f"({format_duration(tails[chosen])}) and training keeps the rest."
                if chosen < configured
                else f"{head} fits at tta_level {chosen} ({format_duration(tails[chosen])}) after all."
            )
        self.record["tta_level"] = chosen
        if gone and not self._warned_short:
            self._warned_short = True
            self._too_short(trainer, budget)

    def _too_short(self, trainer: L.Trainer, budget: TimeBudget) -> None:
        """The budget's window is gone. After this process's first step, nothing has been learned yet: the run is
        refused (``TimeBudgetTooShort``) rather than evaluated; later, it ends here, evaluated, with a warning."""
        # before any step, a training image is guessed from the sanity check's evaluation speed
        guess = (self._eval_per_view or 0.0) / EVAL_COST_PER_VIEW
        per_image = self._seconds_per_image or self._last_per_image or guess
        images = max(1, trainer.num_training_batches) * self._batch
        epoch = one_epoch_seconds(images, per_image, trainer.lightning_module)
        shortest = f"--time_budget {budget.minutes_for(budget.elapsed() + epoch):g} would train about one epoch"
        problem = (
            f"--time_budget {budget.seconds / 60:g} is too short for this run: {budget.elapsed():.0f} s have passed "
            f"and its final evaluation alone is estimated at {format_duration(budget.tail)}"
        )
        if self._steps <= 1:  # nothing learned yet (the same on every rank)
            when = "before training" if self._steps == 0 else "after its first step"
            raise TimeBudgetTooShort(f"{problem}, so it stops {when}. {shortest} (at the speed measured so far).")
        rank_zero_warn(
            f"{problem}, so training ends now, at step {trainer.global_step}, before its schedule has annealed. "
            f"{shortest} at the speed measured."
        )

    def _project_budget(
        self, trainer: L.Trainer, pl_module: L.LightningModule, budget: TimeBudget, speed: str, key: str, head: str
    ) -> None:
        """Under a time budget: prints and records how many epochs the budget's remaining time fits."""
        assert self._seconds_per_image is not None
        self._fit_final_evaluation(trainer, pl_module, budget)
        # the budget's progress is time: images per second, averaged over the time left, is 1 / cost averaged
        left = budget.window() - budget.elapsed()
        images = max(0.0, left) / self._seconds_per_image * speedup(pl_module, training_progress(trainer)[0])
        batches = max(1, trainer.num_training_batches)
        epochs = (trainer.global_step + images / self._batch) / batches
        label = f"{head}: time budget" if head else "Time budget"
        rank_zero_info(
            f"{label} {format_duration(budget.seconds)}: at {speed} the schedule fits about {epochs:.1f} epochs, "
            "then evaluates."
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
        after = after_fit_seconds(trainer.callbacks, self.test_follows)  # type: ignore[attr-defined]
        total = seconds_since_process_start() + cost["fit"] + cost["test"] + after
        fit = time.perf_counter() - self._fit_start + cost["fit"]
        test = f", test {format_duration(cost['test'])}" if self.test_follows else ""
        rank_zero_info(
            f"{head or 'Estimated'}: {format_duration(total)} start to exit ({speed}; fit {format_duration(fit)}"
            f"{test}, export, figures and exit {format_duration(after)})."
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
            "after_fit_seconds": round(after, 2),
            "wall_seconds": round(total, 1),
            "at_step": trainer.global_step,
        }
