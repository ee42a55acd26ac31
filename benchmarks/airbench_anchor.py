"""airbench94_muon's own code, run on exactly our train/validation split: the accuracy anchor for this data.

    python benchmarks/airbench_anchor.py --airbench PATH/airbench94_muon.py --data_dir DIR --runs 5 --out OUT

The script is imported from its public repository's file (https://github.com/KellerJordan/cifar10-airbench), never
copied here. Its loader reads ``./cifar10/train.pt`` and ``./cifar10/test.pt`` (uint8 HWC images) and downloads
CIFAR-10 only when they are missing, so this writes our 45,000/5,000 split there (``CIFAR10DataModule``'s seeded
split, ``val_split=5000, seed=42``: the images every ``train.py`` run trains and validates on) and runs its
``main`` in that folder, compiled as its ``__main__`` does, one warm-up run first. Its "test" accuracy is then our
validation accuracy. Without CUDA (a dry run) it writes the split, checks it, and stops.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cifar_lightning import CIFAR10DataModule


def write_split(data_dir: str, work: Path) -> dict[str, int]:
    """Our train and validation images as airbench's ``train.pt`` / ``test.pt`` under ``work/cifar10``."""
    dm = CIFAR10DataModule(data_dir=data_dir, val_split=5000, seed=42)
    dm.prepare_data()
    dm.setup("fit")
    folder = work / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, split in (("train", dm.data_train), ("test", dm.data_val)):
        assert split is not None
        images = split.images.permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3) uint8, as torchvision's .data
        torch.save({"images": images, "labels": split.labels, "classes": list(dm.classes)}, folder / f"{name}.pt")
        sizes[name] = len(split.labels)
    return sizes


def final_seconds(table: str) -> float | None:
    """The last column of airbench's final ("eval") row: its own timer's total training seconds."""
    rows = [line for line in table.splitlines() if "|" in line and "eval" in line]
    cells = [c.strip() for c in rows[-1].split("|") if c.strip()] if rows else []
    try:
        return float(cells[-1])
    except (IndexError, ValueError):
        return None


def run_airbench(path: Path, work: Path, runs: int) -> dict[str, Any]:
    os.chdir(work)
    spec = importlib.util.spec_from_file_location("airbench94_muon", path)
    assert spec is not None and spec.loader is not None
    airbench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(airbench)
    model = airbench.CifarNet().cuda().to(memory_format=torch.channels_last)
    model.compile(mode="max-autotune")  # as its __main__ does
    start = time.perf_counter()
    airbench.main("warmup", model)
    warmup = time.perf_counter() - start
    accs, seconds, walls = [], [], []
    for run in range(runs):
        buffer, start = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            accs.append(float(airbench.main(run, model)))
        walls.append(time.perf_counter() - start)
        seconds.append(final_seconds(buffer.getvalue()))
        sys.stdout.write(buffer.getvalue())
    return {
        "accs": accs,
        "mean": statistics.mean(accs),
        "std": statistics.pstdev(accs),
        "airbench_seconds": seconds,
        "wall_seconds": walls,
        "warmup_and_compile_seconds": warmup,
        "gpu": torch.cuda.get_device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--airbench", type=Path, required=True, help="path of airbench94_muon.py")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.airbench.is_file():
        raise SystemExit(f"error: --airbench {args.airbench} is not a file: clone KellerJordan/cifar10-airbench.")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / "airbench_work"  # 150 MB of tensors: not in the output folder
    result: dict[str, Any] = {"split": write_split(args.data_dir, work), "airbench": str(args.airbench)}
    if torch.cuda.is_available():
        result.update(run_airbench(args.airbench.resolve(), work, args.runs))
    else:
        result["skipped"] = "no CUDA: airbench94_muon needs a GPU (dry run: split written and checked)"
    (args.out / "airbench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "accs"}))


if __name__ == "__main__":
    main()
