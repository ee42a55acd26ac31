"""Callbacks that tests add to train.py runs with ``--trainer.callbacks+=probes.<Name>`` (tests/ on the path)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch


class SignalAt(L.Callback):
    """Sends ``signal_name`` (``SIGTERM``, ``SIGINT``, ``SIGKILL``) to this process once ``step`` steps are done;
    under DDP on every rank (as SLURM does), or only on rank ``rank``."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", rank: int | None = None) -> None:
        self.step, self.signal_name, self.rank, self.sent = step, signal_name, rank, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class RecordShards(L.Callback):
    """Writes ``<out>/rank<r>.pt``: the training indices of each epoch and the last validation's predictions."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.train: list[torch.Tensor] = []
        self.val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler  # type: ignore[union-attr]
        self.train.append(torch.cat([b[0] if isinstance(b, tuple) else b for b in sampler]))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.val.append((pl_module(batch[0]).argmax(-1).cpu(), batch[1].cpu()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        preds, labels = (torch.cat(t) for t in zip(*self.val, strict=True))
        torch.save({"train": self.train, "preds": preds, "labels": labels}, self.out / f"rank{trainer.global_rank}.pt")


class InterruptTest(L.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does outside fit) when the first test batch starts."""

    def on_test_batch_start(self, *args: Any) -> None:
        raise KeyboardInterrupt


class PoisonRank(L.Callback):
    """On rank ``rank`` only, fills the first weight with NaN before step ``step``: a divergence one rank sees."""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class SignalInValidation(L.Callback):
    """Sends ``signal_name`` to this process during the first validation of fit (not the sanity check)."""

    def __init__(self, signal_name: str = "SIGTERM") -> None:
        self.signal_name, self.sent = signal_name, False

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))
