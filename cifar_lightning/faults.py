"""Surviving faults: checkpoints that are never half-written, a clean stop on Ctrl-C/SIGTERM, and resuming.

- ``AtomicCheckpointIO`` writes each checkpoint to a temporary file next to its target, flushes it to disk and then
  renames it over the target, so a kill at any moment leaves the previous checkpoint whole.
- ``GracefulStop`` turns Ctrl-C into what Lightning does on SIGTERM (finish the current step on every rank, then
  stop), and on either signal saves ``checkpoints/last.ckpt`` before the run ends.
- ``find_last_checkpoint``, ``read_checkpoint``, ``check_checkpoint`` and ``fit_finished`` serve
  ``train.py --ckpt_path``.
"""

from __future__ import annotations

import os
import signal
import zipfile
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cifar_lightning.files import atomic_target
from cifar_lightning.runs import CHECKPOINTS_DIR, RunError, read_results

LAST = "last.ckpt"
EXPORT_HINT = "model.pt2/model.onnx may be missing (export.export_net exports a checkpoint's network)."


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names it and what to do."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's folder, ``fsync``, then rename (``files.atomic_target``).

    Lightning's own save goes through a temporary file in the system temp folder and ``shutil.move``, which is a
    copy, and so not atomic, whenever that folder is on another file system than the run (a tmpfs /tmp, a cluster's
    scratch disk). A rename within one folder is atomic on POSIX and Windows.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction is the best there is
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        try:
            with atomic_target(target) as tmp, open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        except OSError as err:  # a full disk, a lost mount, a quota
            raise CheckpointWriteError(
                f"Could not write the checkpoint {target} ({err.strerror or err}); the checkpoints written before it "
                "are kept. Free space (or point --trainer.default_root_dir at another disk), then resume with "
                "--ckpt_path last."
            ) from None


class GracefulStop(L.Callback):
    """On SIGTERM or a first Ctrl-C: stop after the current step, save ``last.ckpt``, and let the run end non-zero.

    During fit this replaces Lightning's SIGTERM handler, which broadcasts over the process group from inside the
    signal handler: a collective that can interleave with the step's own and leave DDP ranks stuck (issue 13). Here
    the handler only records the signal and forwards SIGTERM to the DDP workers Lightning started; the ranks then
    decide together before each step (one all-reduce, DDP only), so every rank stops at the same step and saves
    the same checkpoint. A second Ctrl-C interrupts at once. ``signal_name``, ``step`` and ``checkpoint`` describe
    the stop for ``results.json``.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.step: int | None = None
        self.checkpoint: str | None = None
        self.after_training = False  # the stop came in fit's end hooks (the export): training had finished
        self._received: str | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not earlier: Lightning installs its handlers when fit starts and puts the original ones back at teardown.
        self.signal_name = self.step = self.checkpoint = self._received = None
        self.after_training = False
        self._trainer = trainer
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread (e.g. a notebook's worker thread): keep the default behaviour
            self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self._restore(signal.SIGINT)  # a second Ctrl-C raises KeyboardInterrupt right away
            rank_zero_info("\nCtrl-C: stopping after the current step and saving a checkpoint (Ctrl-C again to abort).")
        if self._received is None:
            self._received = signal.Signals(signum).name
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if launcher is not None:  # the DDP workers Lightning started, which a terminal's Ctrl-C may not reach
                launcher.kill(signal.SIGTERM)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Before the next step rather than after this one: every callback has seen the finished step by then.
        stop = self._received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException  # what Lightning raises on SIGTERM: on_exception below saves and reports

    def _restore(self, signum: int) -> None:
        if signum in self._previous:
            signal.signal(signum, self._previous.pop(signum))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.after_training = True  # from here on a signal interrupts the export, not the training
        self._restore_all()

    def _restore_all(self) -> None:
        for signum in list(self._previous):
            self._restore(signum)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_all()
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        interrupted = self._received == "SIGINT" or isinstance(exception, KeyboardInterrupt)
        self.signal_name = "SIGINT" if interrupted else "SIGTERM"  # SIGTERM too on a rank another rank stopped
        self.step = trainer.global_step
        if self.after_training and trainer.state.fn == "fit":  # last.ckpt and the results are already final
            rank_zero_info(
                f"Stopped by {self.signal_name} after training, while exporting: results.json and the checkpoints "
                f"are whole; {EXPORT_HINT}"
            )
            return
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and trainer.state.fn == "fit":
            path = str(Path(callback.dirpath) / LAST)
            trainer.save_checkpoint(path, weights_only=False)  # every rank calls it: the strategy decides who writes
            self.checkpoint = path
        if trainer.state.fn == "fit" and self.checkpoint is None and self.step == 0:  # e.g. while decoding the data
            rank_zero_info(f"Stopped by {self.signal_name} before training started; nothing to resume.")
        elif trainer.state.fn == "fit":
            rank_zero_info(f"Stopped by {self.signal_name} at step {self.step}; resume with --ckpt_path last.")
        else:  # nothing to resume: evaluation starts over from its checkpoint
            rank_zero_info(f"Stopped by {self.signal_name} during {trainer.state.fn}; rerun the command to redo it.")

    @staticmethod
    def of(trainer: L.Trainer) -> GracefulStop | None:
        """The trainer's GracefulStop callback, if it has one."""
        return next((cb for cb in trainer.callbacks if isinstance(cb, GracefulStop)), None)  # type: ignore[attr-defined]

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (signal.SIGINT if self.signal_name == "SIGINT" else signal.SIGTERM)


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


def out_of_memory_message(err: BaseException, batch_size: int | None) -> str | None:
    """What to do, when ``err`` is the machine running out of memory: Python's MemoryError, torch's on a GPU, or the
    CPU allocator's RuntimeError; None for any other error."""
    text = str(err)
    if not isinstance(err, MemoryError | torch.OutOfMemoryError) and not (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        return None
    what = text.splitlines()[0][:160] if text else type(err).__name__
    now = f" (now {batch_size})" if batch_size else ""
    return (
        f"out of memory ({what}). Lower --data.batch_size{now}, or train a smaller model (--model cnn_fast); the "
        "checkpoints written so far are kept (--ckpt_path last resumes)."
    )


def checkpoint_callbacks(every_minutes: float | None, every_n_steps: int | None) -> list[ModelCheckpoint]:
    """Best-by-val/acc plus ``last.ckpt`` every epoch, and ``last.ckpt`` again at the intervals asked for (one
    ``last.ckpt``, whichever callback wrote it)."""
    keep: dict[str, Any] = {"save_last": True, "enable_version_counter": False}
    callbacks = [
        ModelCheckpoint(
            monitor="val/acc",
            mode="max",
            auto_insert_metric_name=False,
            filename="epoch={epoch}-step={step}-val_acc={val/acc:.4f}",
            **keep,
        )
    ]
    if every_minutes:
        callbacks.append(ModelCheckpoint(save_top_k=0, train_time_interval=timedelta(minutes=every_minutes), **keep))
    if every_n_steps:
        callbacks.append(ModelCheckpoint(save_top_k=0, every_n_train_steps=every_n_steps, **keep))
    return callbacks


def find_last_checkpoint(run_root: Path) -> Path | None:
    """The most recently written ``<run>/checkpoints/last.ckpt`` under ``run_root`` (``runs/<model>``)."""
    found = [p for p in run_root.glob(f"*/{CHECKPOINTS_DIR}/{LAST}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``; ``ValueError`` with what to do when it is not a readable Lightning checkpoint."""
    if not path.is_file():
        raise ValueError(f"--ckpt_path {path}: no such file. Pass a .ckpt from a run's checkpoints/ folder, or last.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--ckpt_path {path} is not a PyTorch checkpoint (damaged or truncated, or another format).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"--ckpt_path {path} could not be read ({type(err).__name__}): it is damaged.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"--ckpt_path {path} holds no Lightning state_dict: it was not written by a Lightning run.")
    return checkpoint


def check_checkpoint(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint at ``path``; ``ValueError`` with what to do when it is unreadable or holds other weights than
    ``model``'s."""
    checkpoint = read_checkpoint(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    if found != expected:
        differing = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        saved_by = checkpoint.get("hyper_parameters", {}).get("_class_path", "another model")
        raise ValueError(
            f"--ckpt_path {path} was saved by {saved_by} with other weights than this model "
            f"({type(model).__name__}; first difference: {differing[0]}). Pass a checkpoint of the same model and "
            "settings (--model, --model.widths, ...)."
        )
    return checkpoint


def completed_epochs(checkpoint: dict[str, Any]) -> int:
    """Training epochs the checkpoint has finished (Lightning's fit-loop progress)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(progress.get("current", {}).get("completed", checkpoint.get("epoch", 0)))


def fit_finished(
    checkpoint: dict[str, Any],
    results: dict[str, Any] | None,
    max_epochs: int | None,
    max_steps: int | None,
    time_budget: float | None,
) -> bool:
    """Whether resuming from ``checkpoint`` would train nothing: its run's fit ended normally at this very checkpoint
    (``results``, the run's results.json, says so) and the stopping point asked for now is no later than then.

    Lightning would otherwise restore the finished loop, train zero steps and run the end-of-fit hooks again, which
    overwrote the run's results with empty ones.
    """
    step = int(checkpoint.get("global_step", 0))
    ended_here = (
        results is not None
        and results.get("interrupted") is None
        and results.get("train_seconds") is not None
        and results.get("global_step") == step
    )
    if not ended_here or results is None:
        return False
    if max_steps is not None and max_steps >= 0:
        return step >= max_steps
    if time_budget is not None and results.get("time_budget_minutes") is not None:
        return time_budget <= results["time_budget_minutes"]
    epochs = 1000 if max_epochs is None else max_epochs  # Lightning's default when neither limit is set
    return epochs != -1 and completed_epochs(checkpoint) >= epochs


def nothing_to_resume(
    run: Path, checkpoint: dict[str, Any], max_epochs: int | None, max_steps: int | None, time_budget: float | None
) -> str | None:
    """What to tell the user when resuming ``run`` (a run folder) from ``checkpoint`` would train nothing, else
    None (``fit_finished`` decides, from the run's results.json)."""
    try:
        results = read_results(run)
    except RunError:
        return None  # no results, or unreadable ones: the resume writes them
    if not fit_finished(checkpoint, results, max_epochs, max_steps, time_budget):
        return None
    if (test := results.get("test/acc")) is not None:
        tested = f", test/acc {test:.4f}"
    else:
        tested = (
            f"; not tested: python train.py test --model {run.parent.name} --data.data_dir {results.get('data_dir')} "
            f"--ckpt_path {results.get('best_checkpoint')}"
        )
    return (
        f"Nothing to resume: run {run} finished training at step {checkpoint.get('global_step')} "
        f"(val/acc_best {results.get('val/acc_best')}{tested}). Its results are left as they are. To train it "
        "longer, raise --trainer.max_epochs (or --time_budget); to start over, leave out --ckpt_path."
    )
