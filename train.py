"""Train and compare CIFAR-10 classifiers: `python train.py --model cnn` (see README.md)."""

import gc
import os
import sys
from pathlib import Path

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Before torch is imported: PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first allocation. With it, large tensors
# ask the kernel for 2 MB pages, so each training step's fresh activations fault in 512 times less often;
# benchmarks/RESULTS.md has the measured gain.
if THP_SETTING.exists() and "[never]" not in THP_SETTING.read_text():
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# Python's full garbage collections walk every object alive; the imports make about 400,000 (torch, Lightning,
# torchmetrics, torchvision) and collected almost none of them, six times over as they grew: 1.0 s of the default MLP's
# start on 2 real-AVX2 cores, and 2 to 3 s more at its exit (benchmarks/RESULTS.md, "2026-12-07, night"). So no
# collection during the imports, and their objects frozen: later collections, and the one at exit, skip them.
gc.disable()
from cifar_lightning.run.cli import main  # noqa: E402

gc.freeze()
gc.enable()

if __name__ == "__main__":
    code = main()
    gc.freeze()  # the run's objects too: the collection at exit then has nothing to walk
    sys.exit(code)
