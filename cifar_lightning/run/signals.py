"""A clean stop on Ctrl-C or SIGTERM: ``GracefulStop`` turns Ctrl-C into what Lightning does on SIGTERM (finish the
current step on every rank, then stop), and on either signal saves ``checkpoints/last.ckpt`` before the run ends."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cifar_lightning.run.checkpoints import EXPORT_HINT, LAST


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
        self._install()

    def _install(self) -> None:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous.setdefault(signum, signal.signal(signum, self._on_signal))
        except ValueError:  # not the main thread (e.g. a notebook's worker thread): keep the default behaviour
            self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.after_training:  # no step left to finish: interrupt the export now (on_exception reports it)
            self._received = signal.Signals(signum).name
            raise KeyboardInterrupt if signum == signal.SIGINT else SIGTERMException
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

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning's teardown, just before this, put back the handlers from before fit; restoring the ones saved at
        # train start would bring back Lightning's own.
        self._previous.clear()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning calls this after its teardown: the handlers from before fit are back, and they may ignore SIGINT
        # (a process started in the background) or end the process without results. The export that follows stops
        # on a signal instead, with exit status 130/143 and the fit's results kept; ``release`` ends that.
        self.after_training = True
        self._install()

    def release(self) -> None:
        """Puts back the signal handlers from before fit (``fit_and_test`` calls it once fit has returned)."""
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
