"""Resuming a run: the checkpoint ``--ckpt_path`` names (``last`` resolved, the file checked against the model), the
run folder it belongs to, and a refusal when resuming would train nothing or would read back a damaged file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from cifar_lightning.run import runs
from cifar_lightning.run.checkpoints import check_checkpoint, find_last_checkpoint, nothing_to_resume
from cifar_lightning.run.usage import NothingToDo, UsageError


@dataclass(frozen=True)
class Limits:
    """Where the resumed run stops: the Trainer's ``max_epochs`` and ``max_steps``, and ``--time_budget``."""

    max_epochs: int | None
    max_steps: int | None
    time_budget: float | None


@dataclass(frozen=True)
class Resume:
    """What ``--ckpt_path`` resolved to.

    Attributes:
        ckpt_path: the checked checkpoint (``last`` resolved), ``best``, or None to start fresh.
        run_id: the run folder fit resumes in (its own), or None for a new one.
        step: the checkpoint's step, when fit resumes a run: metrics.csv rows from it on are logged again.
        evaluated_run: the fit run whose checkpoint ``test`` evaluates, or None.
    """

    ckpt_path: str | None
    run_id: str | None = None
    step: int | None = None
    evaluated_run: Path | None = None


def resolve_checkpoint(
    ckpt: str | None, model_root: Path, model: torch.nn.Module, subcommand: str | None, limits: Limits
) -> Resume:
    """Resolves ``ckpt`` for ``model``, whose runs are under ``model_root`` (``runs/<model>``); ``UsageError`` for a
    checkpoint that is unreadable or holds another network, ``NothingToDo`` when fit would train nothing."""
    if ckpt in (None, "best"):
        return Resume(ckpt)
    if ckpt == "last":
        found = find_last_checkpoint(model_root)
        if found is None:  # as Lightning does: `--ckpt_path last` can be set before the first run (SLURM requeue)
            where = f"no {model_root.name} run under {model_root.parent}"
            rank_zero_info(f"--ckpt_path last: {where} has checkpoints/last.ckpt; starting fresh.")
            return Resume(None)
        ckpt = str(found)
    path = Path(ckpt).expanduser()
    try:
        checkpoint = check_checkpoint(path, model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    run = runs.run_of_checkpoint(path, model_root)
    if run is not None and subcommand in (None, "fit"):
        refuse_finished(run, checkpoint, limits)
        return Resume(str(path), run.name, int(checkpoint.get("global_step", 0)))
    return Resume(str(path), evaluated_run=run if subcommand == "test" else None)


def refuse_finished(run: Path, checkpoint: dict[str, Any], limits: Limits) -> None:
    """``NothingToDo`` when resuming ``run`` from ``checkpoint`` would train nothing: its results stay as they are
    (a requeued cluster job that always passes ``--ckpt_path last`` ends at once)."""
    if problem := runs.damaged_file(run):  # it would end the resumed run in a traceback, or be overwritten
        raise UsageError(
            f"cannot resume {run}: {problem}. Move it aside and resume again: the run writes a new one (the rows of a "
            "moved metrics.csv are then missing from its curves)."
        )
    if message := nothing_to_resume(run, checkpoint, limits.max_epochs, limits.max_steps, limits.time_budget):
        raise NothingToDo(message)
