"""The run's cost estimate, the hardware it records, and the time-budgeted schedule (on a fake clock)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from helpers import quiet_trainer, run_dirs, tiny_args, write_folder

from cifar_lightning import CIFAR10DataModule, CNNClassifier, MLPClassifier
from cifar_lightning.models.optim import lr_factor, lr_factor_at, schedule_factor
from cifar_lightning.models.tta import tta_logits
from cifar_lightning.report import export
from cifar_lightning.report.figures import RunFigures
from cifar_lightning.run import costs, estimate
from cifar_lightning.run.budget import TimeBudget, TimeBudgetTooShort, seconds_since_process_start
from cifar_lightning.run.cli import main
from cifar_lightning.run.estimate import CostReport
from cifar_lightning.run.hardware import describe, hardware_info


class FakeClock:
    """A clock that moves only when a test says: ``step_seconds`` per training step, nothing elsewhere."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AdvanceClock(L.Callback):
    """Moves the fake clock forward before every training step, and records the learning rate each step used."""

    def __init__(self, clock: FakeClock, step_seconds: float) -> None:
        self.clock, self.step_seconds = clock, step_seconds
        self.lrs: list[float] = []
        self.tta_validations: list[int] = []  # global step of each validation that used TTA
        self.validated_epochs: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.clock.now += self.step_seconds
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_epochs.append(trainer.current_epoch)
        if not trainer.sanity_checking and pl_module._use_tta("val"):  # type: ignore[operator]
            self.tta_validations.append(trainer.global_step)


def test_estimate_adds_training_validations_tta_and_test() -> None:
    work = costs.Workload(
        train_images=9000,
        val_images_per_check=1000,
        val_checks=3,
        tta_views=6,
        test_images=2000,
        seconds_per_train_image=0.003,
    )
    cost = costs.estimate_seconds(work)
    per_view = 0.001  # a third of a training image
    assert cost["fit"] == pytest.approx(27 + 1000 * per_view * (2 + 6))  # two single-view checks, one with TTA
    assert cost["test"] == pytest.approx(2000 * per_view * 6)
    assert costs.format_duration(65) == "1:05" and costs.format_duration(3725) == "1:02:05"


def test_estimate_weighs_each_step_by_its_cost() -> None:
    # Progressive resizing: the first half of the steps at 16 pixels cost a quarter of a full-size step. Measured
    # there, a step must be scaled up to full size, and the rest of the run weighed by what each step will cost.
    model = CNNClassifier(widths=(8, 16), low_res=16, low_res_fraction=0.5)
    assert costs.step_cost(model, 0.2) == 0.25 and costs.step_cost(model, 0.7) == 1.0
    assert costs.average_to_end(partial(costs.step_cost, model), 0.0) == pytest.approx(0.625)
    assert costs.average_to_end(partial(costs.step_cost, model), 0.5) == pytest.approx(1.0)
    images_per_second = costs.average_to_end(lambda p: 1 / costs.step_cost(model, p), 0.0)  # a budget's, relative
    assert images_per_second == pytest.approx(2.5)
    assert costs.step_cost(MLPClassifier(hidden_sizes=(8,)), 0.2) == 1.0  # a model whose steps all cost the same
    # the epoch a refused budget's suggestion is sized for: 1,000 images at 10 ms each at full size, and 2.5 times
    # as fast where half the run's time goes to quarter-cost steps (it counted every step at full size before)
    assert costs.one_epoch_seconds(1000, 0.01, MLPClassifier(hidden_sizes=(8,))) == pytest.approx(10.0)
    assert costs.one_epoch_seconds(1000, 0.01, model) == pytest.approx(4.0)


def test_the_estimate_counts_what_follows_fit() -> None:
    """Exports, figures, the test split's loading and the exit follow fit and no step times them: the estimate adds
    what each callback says it takes (on 2 real-AVX2 cores the MLP's first line missed 16 s of them, 2026-12-07)."""
    figures = RunFigures()
    seconds = {
        f: costs.after_fit_seconds([export.ExportBest(f), figures, L.Callback()], False) for f in ("none", "pt2", "all")
    }
    assert seconds["none"] == pytest.approx(figures.CURVES_SECONDS + costs.EXIT_SECONDS)
    assert seconds["none"] < seconds["pt2"] < seconds["all"]  # the ONNX export costs more than the .pt2 one
    tested = costs.after_fit_seconds([export.ExportBest("none"), figures], True)
    assert tested - seconds["none"] == pytest.approx(figures.TEST_FIGURES_SECONDS + costs.TEST_SETUP_SECONDS)
    assert costs.after_fit_seconds([], False) == costs.EXIT_SECONDS  # a Trainer of your own: only the exit


@pytest.mark.parametrize(("step_seconds", "timed"), [(1.0, 3), (0.5, 4), (0.05, 10)])
def test_short_steps_are_timed_longer_before_the_first_estimate(
    step_seconds: float, timed: int, batches_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 3 warm-up steps, 3 steps of a second make the estimate; shorter ones are timed until they sum to 2 s
    (four of 0.5 s), but for no more than a tenth of the run's 100 steps (ten of 50 ms)."""
    clock = FakeClock()
    monkeypatch.setattr(estimate, "time", SimpleNamespace(perf_counter=clock))
    report = CostReport()
    model = MLPClassifier(hidden_sizes=(32,), whiten=False)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=8)  # 10 steps an epoch
    trainer = quiet_trainer(tmp_path, max_epochs=10, callbacks=[report, AdvanceClock(clock, step_seconds)])
    trainer.fit(model, datamodule=dm)
    assert report.record["estimate"]["at_step"] == CostReport.warmup_steps + timed
    # 100 steps, and 10 validations of 3 batches of 8 at a third of a training image each: 10 steps' worth
    assert report.record["estimate"]["fit_seconds"] == pytest.approx(110 * step_seconds, rel=0.01)


def test_hardware_line_names_device_precision_and_threads() -> None:
    info = hardware_info("cpu", "32-true")
    assert info["threads"] == torch.get_num_threads() and info["precision_native"] is True
    assert info["cpu_kernels"] == torch.backends.cpu.get_cpu_capability() and info["gpu"] is None
    line = describe("cpu", "32-true")
    assert line.startswith("Hardware: CPU ") and f"{torch.get_num_threads()} threads" in line
    assert "precision 32-true (native)" in line


RESIDENT_AFTER_FREE = """
import sys, torch
from pathlib import Path
from cifar_lightning.run.hardware import return_freed_memory
def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
if sys.argv[1] == "return":
    return_freed_memory()
torch.ones(30 * 2**18)  # a 30 MB block freed: glibc's default then serves blocks up to 30 MB from its heap
before = resident_mb()
torch.ones(20 * 2**18)  # 20 MB, written and freed
print(resident_mb() - before)
"""


@pytest.mark.processes
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc setting is glibc's")
def test_fp32_runs_return_freed_blocks_to_the_system() -> None:
    """With glibc's moving threshold a freed 20 MB block stays resident; with ``return_freed_memory`` it does not."""
    grown = {}
    for mode in ("default", "return"):
        out = subprocess.run([sys.executable, "-c", RESIDENT_AFTER_FREE, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        grown[mode] = float(out.stdout)
    assert grown["default"] > 15 and grown["return"] < 5, grown


def test_budget_schedule_matches_the_step_schedule_after_warm_up() -> None:
    total, warmup = 200, 40
    for step in range(warmup, total + 1, 7):
        expected = lr_factor(step, total, warmup, "linear")
        assert lr_factor_at(step / total, warmup / total, "linear") == pytest.approx(expected)
    assert lr_factor_at(0.1, 0.2, "linear") == pytest.approx(0.5)  # half-way through the warm-up
    assert lr_factor_at(1.0, 0.2, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_schedule_factor_follows_the_step_count_or_the_budget_and_refuses_both_or_neither() -> None:
    by_steps = schedule_factor(0.2, "linear", total_steps=200)
    assert [by_steps(s) for s in (0, 39, 120, 200)] == [lr_factor(s, 200, 40, "linear") for s in (0, 39, 120, 200)]
    done = [0.1]
    by_budget = schedule_factor(0.2, "linear", progress=lambda: done[0])
    assert by_budget(5) == pytest.approx(0.5)  # the step number is ignored: the fraction of the budget decides
    done[0] = 0.6
    assert by_budget(5) == pytest.approx(0.5)  # half-way through the decay
    for wrong in ({}, {"total_steps": 200, "progress": lambda: 0.5}):
        with pytest.raises(ValueError, match="exactly one of total_steps"):
            schedule_factor(0.2, "linear", **wrong)  # type: ignore[arg-type]


def budget_fit(
    tmp_path: Path, batches_dir: Path, minutes: float, step_seconds: float, **trainer_args: Any
) -> tuple[Any, ...]:
    clock = FakeClock()
    budget = TimeBudget(minutes, clock=clock, min_reserve_seconds=5.0)  # the step counts below assume 5 s
    probe = AdvanceClock(clock, step_seconds)
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, lookahead=True, tta_level=1, warmup_fraction=0.2)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)  # 5 steps per epoch
    trainer = quiet_trainer(tmp_path, **({"max_epochs": 2} | trainer_args), callbacks=[budget, probe])
    trainer.fit(model, datamodule=dm)
    return trainer, model, budget, probe


def test_budget_ends_the_run_annealed_when_the_clock_says(batches_dir: Path, tmp_path: Path) -> None:
    # A 1-minute budget less its 5 s minimum reserve leaves a 55 s window. At 1 s per step the run takes 55 steps
    # (a 56th would end past it), whatever max_epochs (2, i.e. 10 steps) says.
    trainer, model, budget, probe = budget_fit(tmp_path, batches_dir, minutes=1.0, step_seconds=1.0)
    assert trainer.global_step == 55 and budget.final and budget.progress == 1.0
    assert trainer.current_epoch == 11  # past max_epochs=2: stopped at the end of the 11th epoch
    peak = probe.lrs.index(max(probe.lrs))
    assert peak == 10  # the warm-up covers 20% of the window: the 11th step ends at 11 s, 20% of 55 s
    assert probe.lrs[-1] == 0.0  # the last step ends on the window's end, where the decay reaches 0
    assert probe.tta_validations == [55]  # only the final validation used TTA
    for key, value in model.net.state_dict().items():  # lookahead copied its average in at the end
        if value.is_floating_point():
            torch.testing.assert_close(value, model.lookahead.slow[key], atol=0, rtol=0)


def test_a_slower_machine_gets_fewer_steps_of_the_same_schedule(batches_dir: Path, tmp_path: Path) -> None:
    trainer, model, budget, probe = budget_fit(tmp_path, batches_dir, minutes=1.0, step_seconds=2.4)
    assert trainer.global_step == 22 and budget.final  # 22 steps end at 52.8 s; a 23rd would end at 55.2
    peak = probe.lrs.index(max(probe.lrs))
    assert peak == 4  # the 5th step ends at 12 s, just past 20% of the window
    # the last step ends at 52.8 s, 96% of the window: 95% through the decay, so 5% of the peak rate
    assert probe.lrs[-1] == pytest.approx(0.05 * model.hparams["lr"])
    assert probe.tta_validations == [22]


def test_the_last_epoch_validates_with_tta_whatever_check_val_every_n_epoch_says(
    batches_dir: Path, tmp_path: Path
) -> None:
    """Lightning validates only the epochs check_val_every_n_epoch divides; the run's final validation, with TTA,
    is its result, so it runs in the last epoch of a step count and in the epoch a budget ends."""
    probe = AdvanceClock(FakeClock(), 0.0)
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, tta_level=1)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)  # 5 steps per epoch
    trainer = quiet_trainer(tmp_path, max_epochs=5, check_val_every_n_epoch=2, callbacks=[probe])
    trainer.fit(model, datamodule=dm)
    assert probe.validated_epochs == [1, 3, 4] and probe.tta_validations == [25]
    assert trainer.check_val_every_n_epoch == 2  # the user's setting is back for another fit on this Trainer
    # a 1-minute budget at 1 s per step ends at step 55, in the 11th epoch (index 10), which 2 does not divide
    trainer, _, budget, probe = budget_fit(tmp_path, batches_dir, 1.0, 1.0, check_val_every_n_epoch=2)
    assert trainer.global_step == 55 and budget.final and trainer.check_val_every_n_epoch == 2
    assert probe.validated_epochs == [1, 3, 5, 7, 9, 10] and probe.tta_validations == [55]


def test_the_estimate_counts_the_validations_check_val_every_n_epoch_runs() -> None:
    def left(every: int | None, max_epochs: int, current_epoch: int = 0) -> int:
        trainer = SimpleNamespace(check_val_every_n_epoch=every, max_epochs=max_epochs, current_epoch=current_epoch)
        return costs.validations_left(trainer)  # type: ignore[arg-type]

    assert left(1, 7) == left(None, 7) == 7
    assert left(2, 8) == 4  # epochs 2, 4, 6, 8
    assert left(2, 7) == 4  # epochs 2, 4, 6, and the last
    assert left(2, 8, current_epoch=5) == 2  # epochs 6 and 8 (indices 5 and 7)


class UnsureShare(L.Callback):
    """After the first single-view validation: the share of validation images below the threshold, counted here."""

    def __init__(self, dm: CIFAR10DataModule, threshold: float) -> None:
        self.dm, self.threshold = dm, threshold
        self.counted: float | None = None

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.counted is not None:
            return
        images = [self.dm.transform(x, train=False) for x, _ in self.dm.val_dataloader()]
        confidence = torch.cat([pl_module(x).softmax(-1).amax(-1) for x in images])
        self.counted = (confidence < self.threshold).float().mean().item()


def test_the_estimate_counts_the_extra_tta_views_only_for_the_images_below_the_threshold(
    batches_dir: Path, tmp_path: Path
) -> None:
    """With tta_threshold below 1 the final TTA gives its extra views only to the unsure images: the estimate (and a
    budget's reserve) counts the share the last single-view validation found, not all of them (11-17% long)."""
    threshold = 0.5  # after one step the tiny MLP's top probabilities spread from about 0.4 to 0.7
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, tta_level=3, tta_threshold=threshold)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    probe = UnsureShare(dm, threshold)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[probe])
    trainer.fit(model, datamodule=dm)
    assert probe.counted is not None and 0 < probe.counted < 1
    assert model.tta_share == pytest.approx(probe.counted)  # the final TTA validation does not overwrite it
    trainer.save_checkpoint(tmp_path / "resume.ckpt")  # a resumed run keeps counting the share, not every image
    assert MLPClassifier.load_from_checkpoint(tmp_path / "resume.ckpt").tta_share == model.tta_share
    assert CostReport()._views(model) == pytest.approx(1 + 17 * probe.counted)
    assert CostReport()._views(MLPClassifier(hidden_sizes=(32,), tta_level=3)) == 18  # before any validation: all


def test_budget_carries_its_used_time_through_a_checkpoint() -> None:
    clock = FakeClock()
    first = TimeBudget(10, clock=clock)
    clock.now = 240.0
    state = first.state_dict()
    clock.now = 1000.0  # a new process, much later
    resumed = TimeBudget(10, clock=clock)
    resumed.load_state_dict(state)
    assert resumed.elapsed() == pytest.approx(240.0) and resumed.progress == first.progress
    with pytest.raises(ValueError, match="time_budget must be a positive number of minutes, got 0"):
        TimeBudget(0)


def test_run_prints_hardware_and_estimate_and_records_them(
    batches_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "runs"
    with caplog.at_level("INFO"):
        assert main(tiny_args(batches_dir, out, epochs=2)) == 0
    text = caplog.text
    assert text.count("Hardware: ") == 1 and "precision 32-true (native)" in text  # once, though fit and test run
    assert "Estimated: " in text and "start to exit" in text and ", test " in text  # the test follows fit
    [run] = run_dirs(out)
    results = json.loads((run / "results.json").read_text())
    assert results["hardware"]["precision"] == "32-true" and results["hardware"]["threads"] >= 1
    estimate = results["estimate"]
    assert estimate["at_step"] == 6 and estimate["fit_seconds"] > 0 and estimate["test_seconds"] > 0
    # tiny_args exports the .pt2 only, and a test follows: what the estimate adds for after fit says so
    after = export.ExportBest.SECONDS["pt2"] + RunFigures.CURVES_SECONDS + RunFigures.TEST_FIGURES_SECONDS
    assert estimate["after_fit_seconds"] == pytest.approx(after + costs.TEST_SETUP_SECONDS + costs.EXIT_SECONDS)
    assert "export, figures and exit 0:" in text
    assert results["test_seconds"] > 0 and results["wall_seconds"] > 0 and results["time_budget_minutes"] is None
    assert results["estimate_revised"] is None and "Re-estimated" not in text  # every step cost the same


def test_estimate_is_revised_once_progressive_resizing_switches_to_full_size(
    batches_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first projection times small steps and scales them by their pixels; the cost ratio a machine really has
    differs, so the first full-size steps are timed too and the projection is printed and recorded again."""
    out = tmp_path / "runs"
    resizing = ["--model.low_res", "16", "--model.low_res_fraction", "0.5"]  # 15 steps: 8 at 16 px, then 7 at 32
    with caplog.at_level("INFO"):
        assert main([*tiny_args(batches_dir, out, model="cnn", epochs=3), *resizing]) == 0
    assert caplog.text.count("Estimated: ") == 1 and caplog.text.count("Re-estimated at step 14: ") == 1
    [run] = run_dirs(out)
    results = json.loads((run / "results.json").read_text())
    # timed: steps 4 to 6 (steps 1 to 3 warm up), then 12 to 14 (9 to 11, the first full-size ones, warm up)
    assert results["estimate"]["at_step"] == 6 and results["estimate_revised"]["at_step"] == 14
    assert results["estimate_revised"]["wall_seconds"] > 0


@pytest.mark.parametrize("evaluation_seconds", [None, 100.0])
def test_budget_projection_says_how_many_epochs_fit_or_that_none_do(
    evaluation_seconds: float | None,
    batches_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1-minute budget (a 55 s window) at 0.5 s per step fits many epochs; if the final evaluation were estimated
    at 100 s, none: the user is told so after the first step, with a budget that would work, and the run ends."""
    if evaluation_seconds is not None:
        monkeypatch.setattr(CostReport, "_tail_seconds", lambda *args: evaluation_seconds)
    clock, report = FakeClock(), CostReport()
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, tta_level=1)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)  # 5 steps per epoch
    callbacks = [TimeBudget(1.0, clock=clock), report, AdvanceClock(clock, 0.5)]
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=callbacks)
    if evaluation_seconds is None:
        with caplog.at_level("INFO"):
            trainer.fit(model, datamodule=dm)
        assert caplog.text.count("Time budget 1:00: at ") == 1 and report.record["estimate"]["at_step"] == 6
        assert not [w for w in recwarn if "too short" in str(w.message)]
        assert report.record["estimate"]["epochs"] > 1.0
        return
    # 0.5 s gone, an epoch of a tiny MLP (well under a second) and the 100 s evaluation, with the 5 s reserve
    expected = (
        "--time_budget 1 is too short for this run: 0 s have passed and its final evaluation alone is estimated at "
        "1:40, so it stops before training. --time_budget 2 would train about one epoch (at the speed measured so far)."
    )
    with pytest.raises(TimeBudgetTooShort) as refused:
        trainer.fit(model, datamodule=dm)
    # the sanity check measured the evaluation: refused before the first step
    assert str(refused.value) == expected and trainer.global_step == 0 and "estimate" not in report.record


def test_a_budget_too_short_for_any_training_is_one_line_and_leaves_no_run(
    batches_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.py counts the budget from the process's start: this test process started long before 3 s ago."""
    assert main([*tiny_args(batches_dir, tmp_path / "runs"), "--time_budget", "0.05"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: --time_budget 0.05 is too short for this run: ") and "would train about" in line
    assert run_dirs(tmp_path / "runs") == []


@pytest.mark.parametrize("case", ["guessed", "measured", "ended before the first estimate"])
def test_a_short_budget_evaluates_with_fewer_tta_views(
    case: str, batches_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1-minute budget lets the final evaluation take 15 s. Estimated at 40 s with the mirror (tta_level 1) and
    10 s without, it runs without, even where the budget ends before the first estimate (20 s steps). Where a
    validation measures it cheaper (12 s with the mirror), the mirror comes back for the final validation."""
    measured = case == "measured"

    def tail(report: CostReport, trainer: L.Trainer, module: MLPClassifier, level: int | None = None) -> float:
        level = module.tta_level() if level is None else level
        return {1: 12.0 if measured and trainer.global_step >= 10 else 40.0, 0: 10.0}[level]  # after a validation

    monkeypatch.setattr(CostReport, "_tail_seconds", tail)
    evaluated_at: list[int] = []

    def spy(model: Any, x: torch.Tensor, level: int, threshold: float = 1.0) -> torch.Tensor:
        evaluated_at.append(level)
        return tta_logits(model, x, level, threshold)

    monkeypatch.setattr("cifar_lightning.models.classifier.tta_logits", spy)
    clock, report = FakeClock(), CostReport()
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, tta_level=1)
    # 10 steps per epoch: the first estimate (step 6) guesses, the first validation (after step 10) measures
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=8)
    early = case == "ended before the first estimate"
    step_seconds = 20.0 if early else 2.0
    callbacks = [TimeBudget(1.0, clock=clock), report, AdvanceClock(clock, step_seconds)]
    # without a sanity check, nothing measures the evaluation before the first step: each step sizes it then
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=callbacks, num_sanity_val_steps=0 if early else 2)
    with caplog.at_level("INFO"):
        trainer.fit(model, datamodule=dm)
    assert (trainer.global_step < 6) == early
    assert (
        "the final evaluation at tta_level 1 is estimated at 0:40, over 25% of the budget, so it runs at "
        "tta_level 0 (0:10)" in caplog.text
    )
    assert evaluated_at and set(evaluated_at) == {int(measured)}  # the final validation, at the level chosen
    assert report.record["tta_level"] == int(measured) and model.hparams["tta_level"] == 1  # as configured
    assert ("fits at tta_level 1 (0:12) after all" in caplog.text) == measured


def test_a_budget_used_up_before_training_says_so(
    batches_dir: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    clock = FakeClock()
    budget = TimeBudget(1.0, clock=clock)
    clock.now = 100.0  # 100 s gone (slow imports, a slow disk) before the first step of a 55 s window
    model = MLPClassifier(hidden_sizes=(32,), whiten=False, tta_level=1)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[budget, AdvanceClock(clock, 0.5)])
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1 and budget.final
    [warning] = [str(w.message) for w in recwarn if "used up" in str(w.message)]
    assert warning.startswith("time_budget 1 was used up before training started: 100 s had passed")


def test_bad_time_budget_is_a_usage_error(batches_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*tiny_args(batches_dir, tmp_path / "runs"), "--time_budget", "-2"]) == 2
    assert "--time_budget is in minutes and must be positive, got -2.0" in capsys.readouterr().err
    assert not run_dirs(tmp_path / "runs")


def test_wall_seconds_counts_the_export_and_figures_after_the_results_are_first_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results.json is written as fit ends (a Ctrl-C in the export keeps it); on data without a test split, the
    export after it took 5.7 s of a 51 s MLP run that wall_seconds did not count."""
    train_only = write_folder(tmp_path / "data", test_per_class=None)
    real_export, exported = export.export_net, []

    def slow_export(*args: Any, **kwargs: Any) -> Path | None:
        time.sleep(1.0)
        path = real_export(*args, **kwargs)
        exported.append(seconds_since_process_start())  # this test process is the run's process
        return path

    monkeypatch.setattr(export, "export_net", slow_export)
    assert main(tiny_args(train_only, tmp_path / "runs", "mlp")) == 0
    [run] = run_dirs(tmp_path / "runs")
    assert exported and json.loads((run / "results.json").read_text())["wall_seconds"] >= round(exported[0], 1)
