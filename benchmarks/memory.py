"""Peak resident memory of a real training run: `train.py` in a child process, its peak RSS read from the kernel.

    python benchmarks/memory.py --data-dir ~/data/cifar10-jpeg --model cnn [--epochs 5] [-- extra train.py flags]

The child runs the default config of ``--model`` for ``--epochs`` epochs (fit, then test if the data has a test
split) without W&B; its folder is temporary. The last line is the headline figure, ``peak_rss=<GiB>GiB``; the issue's
target is under 3 GiB for a 5-epoch run on the CPU.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable, str(REPO / "train.py"), "--model", args.model, "--data.data_dir", args.data_dir,
            "--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir", out,
            "--wandb", "false", "--trainer.enable_progress_bar", "false", *args.extra,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"train.py failed with status {proc.returncode}:\n{proc.stderr[-3000:]}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"model {args.model}, {args.epochs} epochs, wall {seconds:.0f} s")
    print(f"peak_rss={peak_gib:.2f}GiB")


if __name__ == "__main__":
    main()
