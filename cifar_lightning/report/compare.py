"""Compare finished runs without a W&B account: a table on stdout and one PNG of curves and accuracies.

    python -m cifar_lightning.compare runs/mlp/<id> runs/cnn/<id> [--out PATH]

Reads each run's ``results.json`` and ``metrics.csv`` (what ``train.py`` leaves in every run folder). The figure goes
next to the runs by default: ``comparison.png`` in the folder that holds them all (``runs/`` above).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifar_lightning.report import plots
from cifar_lightning.run.runs import RunError, read_curves, read_results

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_lightning.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<model>/<id>/)")
    parser.add_argument("--out", type=Path, default=None, help="figure path; default: comparison.png beside the runs")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(os.path.commonpath([run.resolve().parent.parent for run in args.runs])) / "comparison.png"
    try:
        loaded = [(run, read_results(run), read_curves(run)) for run in args.runs]
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [(run_label(run, results, args.runs), results) for run, results, _ in loaded]
    print(table(rows))
    curves = {label: c for (label, _), (_, _, c) in zip(rows, loaded, strict=True)}
    accuracies = {label: {"best val acc": r.get("val/acc_best"), "test acc": r.get("test/acc")} for label, r in rows}
    fig = plots.comparison(curves, accuracies)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")
    return 0
