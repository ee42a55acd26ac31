"""Compare finished runs without a W&B account: a table on stdout and one PNG of curves and accuracies.

    python -m cifar_lightning.compare runs/mlp/<id> runs/cnn/<id> [--out PATH]

Reads each run's ``results.json`` and ``metrics.csv`` (what ``train.py`` leaves in every run folder). The figure goes
next to the runs by default: ``comparison.png`` in the folder that holds them all (``runs/`` above). ``--out`` is a
figure file (``.png``, ``.pdf`` or ``.svg``; missing folders above it are created, an existing file is replaced) or a
folder (one that exists, or a path ending in ``/``) that gets ``comparison.png``; any other ``--out`` is refused
before anything is read or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cifar_lightning.files import atomic_target
from cifar_lightning.report import plots
from cifar_lightning.run.runs import RESULTS_FILE, RunError, read_curves, read_results

FIGURE_NAME = "comparison.png"
FORMATS = (".png", ".pdf", ".svg")  # what matplotlib writes without extra tools, and what a figure is opened in
KINDS = f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}"

COLUMNS = (  # header, results.json key, format
    ("parameters", "parameters", "{:,}"),
    ("best val acc", "val/acc_best", "{:.4f}"),
    ("test acc", "test/acc", "{:.4f}"),
    ("epochs", "epochs", "{}"),
    ("train s", "train_seconds", "{:.1f}"),
    ("images/s", "images_per_second", "{:,.0f}"),
)


def run_label(run_dir: Path, results: dict[str, Any], others: Sequence[Path]) -> str:
    """The model name, made unique with the run folder's name when two runs share a model."""
    model = str(results.get("model") or run_dir.name)
    return model if sum(p.parent.name == run_dir.parent.name for p in others) == 1 else f"{model} {run_dir.name}"


def run_labels(runs: Sequence[Path], results: Sequence[dict[str, Any]]) -> list[str]:
    """``run_label`` of each run; where two still match (the same model and id under two roots), the path as given,
    since the figure's curves and bars are keyed by label and one run would hide the other."""
    labels = [run_label(run, r, runs) for run, r in zip(runs, results, strict=True)]
    return [str(run) if labels.count(label) > 1 else label for run, label in zip(runs, labels, strict=True)]


def table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    cells = [["run", *(c[0] for c in COLUMNS)]]
    for label, results in rows:
        values = [results.get(key) for _, key, _ in COLUMNS]
        cells.append(
            [label, *("-" if v is None else fmt.format(v) for v, (_, _, fmt) in zip(values, COLUMNS, strict=True))]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class OutError(ValueError):
    """An ``--out`` compare cannot write to; the message says why and what to pass instead."""


def figure_path(out: str) -> Path:
    """The file ``--out`` names (see the module docstring), checked before anything is read or created."""
    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        path /= FIGURE_NAME
    elif path.suffix.lower() not in FORMATS:
        # matplotlib would add .png to a bare name, or fail on an unknown suffix after the folders were made
        problem = f"{path.suffix!r} is not a format compare writes" if path.suffix else "no suffix, and not a folder"
        raise OutError(f"{problem}: name a {KINDS} file, or a folder (an existing one, or end it with /)")
    if path.is_dir():
        raise OutError(f"{path} is a folder: name a file inside it")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutError(f"{blocker} is a file, not a folder: choose another place for the figure")
    return path


def check_numbers(run: Path, results: dict[str, Any]) -> None:
    """The table's and the bars' values are numbers or absent: a hand-edited or foreign file is named, not a crash."""
    for _, key, _ in COLUMNS:
        value = results.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RunError(
                f"{run / RESULTS_FILE} is damaged: {key!r} is {json.dumps(value)[:60]}, not a number; "
                "leave that run out."
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<model>/<id>/)")
    where = f"a {KINDS} file, or a folder for {FIGURE_NAME}; default: {FIGURE_NAME} beside the runs"
    parser.add_argument("--out", default=None, help=where)
    args = parser.parse_args(argv)
    try:
        out = figure_path(args.out) if args.out is not None else default_path(args.runs)
    except OutError as err:
        print(f"error: --out {args.out}: {err}. Nothing was written.", file=sys.stderr)
        return 2
    try:
        runs = list({run.resolve(): run for run in args.runs}.values())  # a run given twice is shown once
        loaded = [(run, read_results(run), read_curves(run)) for run in runs]
        for run, found, _ in loaded:
            check_numbers(run, found)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = [r for _, r, _ in loaded]
    rows = list(zip(run_labels(runs, results), results, strict=True))
    print(table(rows))
    curves = {label: c for (label, _), (_, _, c) in zip(rows, loaded, strict=True)}
    accuracies = {label: {"best val acc": r.get("val/acc_best"), "test acc": r.get("test/acc")} for label, r in rows}
    return save(plots.comparison(curves, accuracies), out)


def default_path(runs: Sequence[Path]) -> Path:
    """``comparison.png`` in the folder that holds all the runs' model folders (``runs/`` for ``runs/cnn/<id>``)."""
    return Path(os.path.commonpath([run.resolve().parent.parent for run in runs])) / FIGURE_NAME


def save(fig: Figure, path: Path) -> int:
    """Writes the figure through a temporary file (a reader never sees half of it); 2 when the disk refuses."""
    try:
        with atomic_target(path, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=120, format=path.suffix[1:].lower())
    except OSError as err:  # no permission, a read-only or full disk: nothing the figure code can fix
        print(f"error: cannot write {path} ({err.strerror or err}); choose another --out.", file=sys.stderr)
        return 2
    print(f"\nwrote {path}")
    return 0
