"""Run folders, ``<root>/<model name>/<run id>/``: naming them, and reading a finished one back (``results.json``
and the per-epoch curves in ``metrics.csv``)."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cifar_lightning.files import atomic_target

RUN_ID_ENV = "CIFAR_LIGHTNING_RUN_ID"  # shared with DDP child processes, which re-run the script
CHECKPOINTS_DIR = "checkpoints"  # Lightning's ModelCheckpoint folder under the first logger's log_dir
RESULTS_FILE = "results.json"  # written by results.RunSummary
METRICS_FILE = "metrics.csv"  # written by the CSV logger
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")


def model_name(model: object) -> str:
    """The name a model's runs are filed under, ``runs/<name>/<run id>/``: ``CNNClassifier`` -> ``cnn``."""
    cls = model if isinstance(model, type) else type(model)
    return cls.__name__.removesuffix("Classifier").lower()


def run_of_checkpoint(checkpoint: Path, model_root: Path) -> Path | None:
    """The run folder holding ``checkpoint`` when it is ``<model_root>/<run id>/checkpoints/<file>``, else None."""
    folder = checkpoint.parent
    if folder.name == CHECKPOINTS_DIR and folder.parent.parent.resolve() == model_root.resolve():
        return folder.parent
    return None


class RunError(ValueError):
    """A folder that is not a finished run; the message names the folder and the missing file."""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON at ``path``, through a temporary file and a rename: a reader never sees half a file."""
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder: it has no {RESULTS_FILE}. Pass folders like runs/cnn/<id>/.")
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunError(f"{path} is damaged or unreadable ({type(err).__name__}): leave that run out.") from None
    if not isinstance(results, dict):
        raise RunError(f"{path} is not a results file (a JSON {type(results).__name__}): leave that run out.")
    return results


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(epoch, value), ...]}`` for the epoch-level metrics; the last value logged in an epoch wins."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {METRICS_FILE}; it was not written by train.py's CSV logger.")
    by_epoch: dict[str, dict[int, float]] = defaultdict(dict)
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for name in EPOCH_METRICS:
                    if row.get(name):
                        by_epoch[name][int(row["epoch"])] = float(row[name])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as err:
        raise RunError(f"{path} is damaged or unreadable ({type(err).__name__}): leave that run out.") from None
    return {name: sorted(points.items()) for name, points in by_epoch.items()}


def new_run_id(root: Path, model_name: str) -> str:
    """A timestamp, made unique within ``root/model_name``; reused from the environment in DDP child processes."""
    if run_id := os.environ.get(RUN_ID_ENV):
        return run_id
    base = run_id = time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while (root / model_name / run_id).exists():
        run_id, suffix = f"{base}-{suffix}", suffix + 1
    return run_id


def damaged_file(run_dir: Path) -> str | None:
    """Which file a resume of ``run_dir`` would read back is damaged, and how, or None: ``results.json`` (JSON)
    and ``metrics.csv`` (its earlier rows are kept, and the figures plot them: UTF-8, numeric cells)."""
    if (run_dir / RESULTS_FILE).is_file():
        try:
            read_results(run_dir)
        except RunError:
            return f"{run_dir / RESULTS_FILE} is not readable JSON"
    path, rows = run_dir / METRICS_FILE, 0
    if not path.is_file():
        return None
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                rows += 1
                int(row["step"])
                for value in row.values():
                    if value:
                        float(value)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as err:
        return f"{path} is damaged after {rows} readable rows ({type(err).__name__})"
    return None
