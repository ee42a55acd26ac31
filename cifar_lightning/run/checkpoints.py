"""Checkpoints that are never half-written, and the checks behind ``train.py --ckpt_path`` and resuming.

- ``AtomicCheckpointIO`` writes each checkpoint to a temporary file next to its target, flushes it to disk and then
  renames it over the target, so a kill at any moment leaves the previous checkpoint whole.
- ``find_last_checkpoint``, ``read_checkpoint``, ``check_checkpoint`` serve ``--ckpt_path``; ``fit_finished`` and
  ``nothing_to_resume`` decide whether a resume has anything left to train.
"""

from __future__ import annotations

import os
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cifar_lightning.files import atomic_target
from cifar_lightning.run.runs import CHECKPOINTS_DIR, RESULTS_FILE, RunError, read_results

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
    # torch.load does not check the archive's CRCs: a flipped byte inside a tensor loads, and shows up later as a
    # NaN loss blamed on the learning rate. Reading every record once costs about 0.1 s per 40 MB.
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(
            f"--ckpt_path {path} is damaged: its record {damaged} fails its CRC check (a disk or copy error, not the "
            "recipe). Use another checkpoint of the run (checkpoints/ keeps the best and last.ckpt)."
        )
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
    except RunError:  # none (cli.py refuses damaged ones): the resume writes them, unless it would train nothing
        epochs = 1000 if max_epochs is None else max_epochs
        if time_budget is None and (max_steps or -1) < 0 and epochs != -1 and completed_epochs(checkpoint) >= epochs:
            return (
                f"Nothing to resume: run {run}'s checkpoint has finished its {epochs} epochs (there is no "
                f"{RESULTS_FILE}). To train it longer, raise --trainer.max_epochs; to start over, omit --ckpt_path."
            )
        return None
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
