"""Train and compare CIFAR-10 classifiers: `python train.py --model cnn` (see README.md)."""

import os
import sys
from pathlib import Path

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Before torch is imported: PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first allocation. With it, large tensors
# ask the kernel for 2 MB pages, so each training step's fresh activations fault in 512 times less often;
# benchmarks/RESULTS.md has the measured gain.
if THP_SETTING.exists() and "[never]" not in THP_SETTING.read_text():
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from cifar_lightning.run.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
