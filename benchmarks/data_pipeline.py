"""Augmented training images per second delivered to the model: CIFAR10DataModule against the textbook pipeline.

    python benchmarks/data_pipeline.py [--data-dir DIR] [--images 20480] [--repeats 5]

Both pipelines start from the same uint8 images in memory and end with a normalized float32 ``(256, 3, 32, 32)``
batch, randomly cropped (4-pixel zero padding) and flipped per image:

- textbook: a torchvision-style Dataset of HWC uint8 arrays, per sample ``Image.fromarray`` -> ``RandomCrop(32,
  padding=4)`` -> ``RandomHorizontalFlip()`` -> ``ToTensor()`` -> ``Normalize``, ``DataLoader`` with 2 workers;
- ours: ``CIFAR10DataModule.train_dataloader()`` (one gather per batch) and ``dm.transform(batch, train=True)``,
  which is what ``on_after_batch_transfer`` runs, here on the CPU.

The two alternate, ``--repeats`` times each, and the medians are compared. Each timed epoch follows an untimed
epoch of the same pipeline: right after the textbook epoch, the machine is still busy for a moment with its worker
processes' clean-up (ours measured 40% slower in that window on 2 cores), and neither side should pay for the other.
Page faults per batch are printed too: when the allocator has handed the previous batch's memory back to the
system, every page of the next batch's buffers is faulted in again, and ours (about 0.3 ms of work per batch) slows
by up to 3x. The last line is the headline ratio.
Without ``--data-dir`` it uses random images (pixel values do not change the cost of either pipeline).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from cifar_lightning import MEAN, STD, CIFAR10DataModule

BATCH = 256


class TextbookCIFAR(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 array -> PIL image -> transforms."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images_hwc, labels
        self.transform = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def time_textbook(loader: DataLoader) -> tuple[float, float]:
    start, faults, n = time.perf_counter(), minor_faults(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start), (minor_faults() - faults) / len(loader)


def time_ours(dm: CIFAR10DataModule) -> tuple[float, float]:
    start, faults, n, batches = time.perf_counter(), minor_faults(), 0, 0
    for images, _ in dm.train_dataloader():
        x = dm.transform(images, train=True)
        n, batches = n + len(x), batches + 1
    return n / (time.perf_counter() - start), (minor_faults() - faults) / batches


def minor_faults() -> int:
    """This process's page faults so far: each one a first touch of a fresh page, about 1 us here."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def make_datamodule(images: torch.Tensor, labels: torch.Tensor) -> CIFAR10DataModule:
    dm = CIFAR10DataModule.from_tensors(images, labels, val_split=0, batch_size=BATCH, crop_padding=4)
    dm.setup("fit")  # the same in-memory images, without touching the disk
    return dm


def load_images(data_dir: str | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir is None:
        gen = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(count) % 10
    dm = CIFAR10DataModule(data_dir=data_dir, val_split=0, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_train is not None
    return dm.data_train.images[:count], dm.data_train.labels[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder; random images if omitted")
    parser.add_argument("--images", type=int, default=20_480)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the textbook pipeline")
    args = parser.parse_args()

    images, labels = load_images(args.data_dir, args.images)
    textbook = DataLoader(
        TextbookCIFAR(images.permute(0, 2, 3, 1).numpy().copy(), labels.numpy()),
        batch_size=BATCH,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    ours = make_datamodule(images, labels)
    time_textbook(textbook), time_ours(ours)  # warm-up: worker start, allocator, oneDNN
    runs: dict[str, list[tuple[float, float]]] = {"textbook": [], "ours": []}
    for _ in range(args.repeats):
        time_textbook(textbook)  # settle (see the module docstring), then time
        runs["textbook"].append(time_textbook(textbook))
        time_ours(ours)
        runs["ours"].append(time_ours(ours))
    med = {k: statistics.median(rate for rate, _ in v) for k, v in runs.items()}
    print(
        f"images per repeat: {len(labels)}, batch {BATCH}, repeats {args.repeats}, torch threads "
        f"{torch.get_num_threads()}"
    )
    for name, values in runs.items():
        rates, faults = [rate for rate, _ in values], [f for _, f in values]
        print(
            f"{name:9s} median {med[name]:10,.0f} img/s  (min {min(rates):,.0f}, max {max(rates):,.0f}), page "
            f"faults per batch in the main process: median {statistics.median(faults):.0f} "
            f"({min(faults):.0f} to {max(faults):.0f})"
        )
    print(f"speedup={med['ours'] / med['textbook']:.1f}x")


if __name__ == "__main__":
    main()
