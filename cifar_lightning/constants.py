"""CIFAR-10 facts, named once. Everything else imports them from here."""

from __future__ import annotations

from collections.abc import Sequence

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32
IMAGE_SHAPE: tuple[int, int, int] = (3, IMAGE_SIZE, IMAGE_SIZE)  # (C, H, W), the layout batches leave the loader in
TRAIN_SIZE = 50_000
TEST_SIZE = 10_000
# Per-channel mean and std of the 50,000 official training images on a 0..1 scale, the values used across the
# ecosystem (torchvision references, lightning-bolts). The JPEG re-encoding this project is developed on agrees with
# them to within a fraction of a percent (benchmarks/RESULTS.md): close enough to share one pair of constants.
MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
# The official python-pickle release (same URL and md5 as torchvision.datasets.CIFAR10).
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


# The per-channel (mean, std) the network was trained behind, or None for plain 0..1 inputs: what the DataModule
# applied (``CIFAR10DataModule.input_normalization``), recorded by the LightningModule in its checkpoints.
Normalization = tuple[Sequence[float], Sequence[float]] | None
