"""CIFAR10DataModule: the whole data set in memory as uint8, batches as single gathers, augmentation on device.

Usage without a Trainer::

    dm = CIFAR10DataModule(data_dir="~/data/cifar10-jpeg")
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))  # uint8 (B, 3, 32, 32), int64 (B,)
    x = dm.transform(images, train=True)  # float32, augmented and normalized: what the model sees
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from cifar_lightning.constants import CLASSES, IMAGE_SHAPE, MEAN, NUM_CLASSES, STD, TRAIN_SIZE
from cifar_lightning.data import cache, sources
from cifar_lightning.data.augment import PaddingMode, color_jitter, normalize, padding_problem, random_crop_flip
from cifar_lightning.data.sampling import Batch, ShardedBatchSampler, _InMemory
from cifar_lightning.data.sources import ACCEPTED_LAYOUTS, DataError, SplitName

Transform = Callable[[Tensor], Tensor]  # a uint8 batch (B, 3, 32, 32) on its device -> the model's float input


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 from disk (official batches, image folders or the official archive), fast enough to keep a GPU busy.

    The full set lives in memory as one uint8 tensor; loaders yield uint8 ``(B, 3, 32, 32)`` images and int64
    labels. Normalization and augmentation (random translation by up to ``crop_padding`` pixels and horizontal flip,
    drawn per sample) run batched on the batch's device in ``on_after_batch_transfer``; validation and test batches
    are only normalized.

    Args:
        data_dir: folder holding one of the accepted layouts (see ``sources``); downloaded into if empty.
        val_split: images held out of the 50,000 training images for validation: a count, or a fraction of the
            training split. The default, 5,000, is 10%; the split is seeded by ``seed`` and the same on every rank.
        batch_size: images per batch on each device.
        num_workers: loader processes. 0 (default) is fastest here: a batch is a single in-memory gather.
        seed: seed of the train/val split and of the per-epoch shuffling.
        normalize: standardize with the CIFAR-10 mean and std; otherwise scale to 0..1.
        augment: random crop and flip on training batches.
        alternate_flip: mirror each training image in every other epoch (a seeded coin decides which epochs)
            instead of on a fresh coin flip per epoch; needs ``augment``.
        color_jitter: shift each training image's brightness by up to this much and scale its contrast by up to
            1 +- this, uniformly per image, on the normalized input (``augment.color_jitter``); 0 turns it off.
        crop_padding: largest random translation in pixels (4 is the usual CIFAR recipe).
        crop_padding_mode: fill of the pixels a translation shifts in, as torchvision's ``padding_mode``:
            ``"constant"`` (zeros, torchvision's default) or ``"reflect"`` (mirrored border, as airbench).
        pin_memory: page-locked batches for faster host-to-GPU copies (ignored without CUDA).
        drop_last: drop the last incomplete training batch (a last batch of one image is always dropped).
        download: fetch the official archive with torchvision when ``data_dir`` holds no data.
        cache_dir: where decoded splits are cached; default ``data_dir/.cache``, or a per-user cache folder when
            ``data_dir`` is read-only.
        shuffle: reshuffle the training images every epoch (seeded); off, they come in split order.

    As lightning-bolts' ``CIFAR10DataModule`` (which needs Lightning < 2), it has ``name``, ``num_classes``,
    ``dims``, ``num_samples``, ``default_transforms()``, ``setup(stage=None)`` and settable ``train_transforms``,
    ``val_transforms`` and ``test_transforms``. Here a transform takes the whole uint8 batch ``(B, 3, 32, 32)`` on
    its device and returns the model's float input; one you set replaces the built-in one of its stage, which stays
    available as ``transform(images, train)``: compose with it, e.g. ``dm.train_transforms = lambda x:
    cutout(dm.transform(x, train=True))``. (torchvision v2 transforms take such batches, but draw one random
    parameter for the whole batch.)
    """

    name: str = "cifar10"
    num_classes: int = NUM_CLASSES
    dims: tuple[int, int, int] = IMAGE_SHAPE
    classes: tuple[str, ...] = CLASSES

    def __init__(
        self,
        data_dir: str = "data",
        val_split: int | float = 5000,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 42,
        normalize: bool = True,
        augment: bool = True,
        crop_padding: int = 4,
        crop_padding_mode: PaddingMode = "constant",
        alternate_flip: bool = False,
        color_jitter: float = 0.0,
        pin_memory: bool = True,
        drop_last: bool = False,
        download: bool = True,
        cache_dir: str | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        _check_args(val_split, batch_size, num_workers, crop_padding, crop_padding_mode, color_jitter)
        self.data_dir = Path(data_dir).expanduser()
        self.val_split, self.batch_size, self.num_workers, self.seed = val_split, batch_size, num_workers, seed
        self.normalize, self.augment, self.crop_padding = normalize, augment, crop_padding
        self.crop_padding_mode, self.alternate_flip, self.color_jitter = crop_padding_mode, alternate_flip, color_jitter
        self.pin_memory, self.drop_last, self.download = pin_memory, drop_last, download
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.data_train: _InMemory | None = None
        self.data_val: _InMemory | None = None
        self.data_test: _InMemory | None = None
        self.shuffle = shuffle
        self._tensors: dict[str, tuple[Tensor, Tensor]] = {}  # from_tensors: splits given in memory, not on disk
        self.train_transforms: Transform | None = None
        self.val_transforms: Transform | None = None
        self.test_transforms: Transform | None = None

    @classmethod
    def from_tensors(
        cls,
        images: Tensor,
        labels: Tensor,
        test_images: Tensor | None = None,
        test_labels: Tensor | None = None,
        **kwargs: Any,
    ) -> CIFAR10DataModule:
        """A DataModule over images already in memory: uint8 ``(N, 3, 32, 32)`` and int64 labels, for the training
        split (held out for validation as ``val_split`` says) and optionally a test split. No files, no cache; the
        loaders, sharding and batched transforms are the usual ones. ``kwargs``: the other ``__init__`` arguments."""
        given = {"train": (images, labels)} | ({} if test_images is None else {"test": (test_images, test_labels)})
        for split, (x, y) in given.items():
            if x.dtype != torch.uint8 or tuple(x.shape[1:]) != IMAGE_SHAPE or y is None or len(x) != len(y):
                raise ValueError(
                    f"from_tensors: the {split} images must be uint8 (N, 3, 32, 32) with N labels; got "
                    f"{x.dtype} {tuple(x.shape)} and {None if y is None else tuple(y.shape)} labels."
                )
        dm = cls(download=False, **kwargs)
        dm._tensors = {split: (x, y.long()) for split, (x, y) in given.items() if y is not None}
        return dm

    # ---- data on disk ----
    def prepare_data(self) -> None:
        """Runs once per node: download or unpack if needed, then decode every split into the cache."""
        if self._tensors:
            return
        if not self.data_dir.is_dir() and self.data_dir.exists():
            raise DataError(f"data_dir {self.data_dir} is a file, not a folder. {ACCEPTED_LAYOUTS}")
        if self.data_dir.is_dir() and not _readable(self.data_dir):
            raise DataError(f"data_dir {self.data_dir} is not readable: check its permissions.")
        source = sources.find_source(self.data_dir)
        if source is None:
            if not self.download:
                raise DataError(
                    f"No CIFAR-10 data in {self.data_dir} and download is off. Put the data there or pass "
                    f"--data.data_dir pointing at it. {ACCEPTED_LAYOUTS}"
                )
            sources.download(self.data_dir)
        elif source == "archive":
            sources.unpack_archive(self.data_dir)
        for split in ("train", "test"):
            if sources.has_split(self.data_dir, split):
                self._load(split)

    def has_test_split(self) -> bool:
        return "test" in self._tensors if self._tensors else sources.has_split(self.data_dir, "test")

    def _load(self, split: SplitName) -> tuple[Tensor, Tensor]:
        if self._tensors:
            return self._tensors[split]
        cache_dir = self.cache_dir or cache.default_cache_dir(self.data_dir)
        return cache.load_split(self.data_dir, split, cache_dir)

    @property
    def num_samples(self) -> int:
        """Training images after the validation split is held out (before ``setup``: of the official 50,000)."""
        if self.data_train is not None:
            return len(self.data_train)
        return TRAIN_SIZE - self._val_count(TRAIN_SIZE)

    def _val_count(self, n: int) -> int:
        """Images held out of ``n`` training images for validation: ``val_split`` as a count, or as a fraction."""
        return round(self.val_split * n) if isinstance(self.val_split, float) else self.val_split

    @property
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The (mean, std) ``transform`` normalizes with, or None (``normalize=False``: inputs scaled to 0..1). The
        LightningModule records it in its checkpoints, for the export, predict and the figures."""
        return (MEAN, STD) if self.normalize else None

    def default_transforms(self) -> Transform:
        """The built-in evaluation transform: uint8 batch -> normalized float batch."""
        return partial(self.transform, train=False)

    def setup(self, stage: str | None = None) -> None:
        """Loads what ``stage`` needs (every split there is, for None); calling it again is cheap."""
        if stage is None:
            self.setup("fit")
            if self.has_test_split():
                self.setup("test")
            return
        if stage in ("fit", "validate") and self.data_train is None:
            self.data_train, self.data_val = self._split_train()
        if stage in ("test", "predict") and self.data_test is None:
            if not self.has_test_split():
                raise DataError(
                    f"{self.data_dir} has no test split (no '{self.data_dir / 'test'}' folder). Add one with the "
                    "same class folders as train/, or evaluate on the validation split with `validate`."
                )
            self.data_test = _InMemory(*self._load("test"))

    def _split_train(self) -> tuple[_InMemory, _InMemory]:
        images, labels = self._load("train")
        n = len(labels)
        n_val = self._val_count(n)
        if n_val >= n:
            raise DataError(
                f"val_split={self.val_split} holds out {n_val} of the {n} training images, leaving none to train "
                f"on. Use a count below {n} or a fraction below 1."
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        # Validation keeps the random order: image folders are read class by class, so a sorted split would make any
        # partial validation (limit_val_batches, a sanity check) a sample of the first classes only.
        val_idx, train_idx = order[:n_val], order[n_val:].sort().values
        return _InMemory(images[train_idx], labels[train_idx]), _InMemory(images[val_idx], labels[val_idx])

    # ---- loaders ----
    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _loader(self, data: _InMemory | None, train: bool) -> DataLoader:
        if data is None:
            raise RuntimeError("No data for this loader: call setup() with the matching stage first.")
        rank, world = self._rank_and_world()
        # A training batch of one image is dropped whatever drop_last says: batch norm cannot normalize it.
        drop = train and (self.drop_last or (len(data) // world) % self.batch_size == 1)
        sampler = ShardedBatchSampler(
            data,
            self.batch_size,
            shuffle=train and self.shuffle,
            drop_last=drop,
            even=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            alternate_flip=train and self.augment and self.alternate_flip,
        )
        return DataLoader(
            data,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # Each pass over a loader draws its workers' seed from this generator, by default the global one that
            # training's augmentation draws from too: evaluation gets its own, so how often a run validates does
            # not change the model it trains.
            generator=None if train else torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, train=False)

    # ---- on-device transforms ----
    def transform(self, images: Tensor, train: bool) -> Tensor:
        """uint8 batch -> float32 model input, augmented when ``train`` and ``augment`` are both on."""
        augment = train and self.augment
        if augment:  # with alternate_flip the loader has mirrored the batch already
            images = random_crop_flip(images, self.crop_padding, not self.alternate_flip, self.crop_padding_mode)
        out = normalize(images, *(self.input_normalization or (None, None)))
        return color_jitter(out, self.color_jitter) if augment and self.color_jitter else out

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        trainer = self.trainer
        stage = "train" if trainer is not None and trainer.training else "val"
        if trainer is not None and (trainer.testing or trainer.predicting):
            stage = "test"
        custom = {"train": self.train_transforms, "val": self.val_transforms, "test": self.test_transforms}[stage]
        return (custom or partial(self.transform, train=stage == "train"))(images), labels


def _readable(path: Path) -> bool:
    try:
        next(path.iterdir(), None)
        return True
    except PermissionError:
        return False


def _check_args(
    val_split: int | float,
    batch_size: int,
    num_workers: int,
    crop_padding: int,
    crop_padding_mode: str,
    color_jitter: float,
) -> None:
    problems = []
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(val_split, float) and not 0 <= val_split < 1:
        problems.append(f"val_split as a fraction must be in [0, 1), got {val_split!r}")
    if isinstance(val_split, int) and val_split < 0:
        problems.append(f"val_split as a count must be >= 0, got {val_split!r}")
    if num_workers < 0:
        problems.append(f"num_workers must be >= 0, got {num_workers!r}")
    if crop_padding < 0:
        problems.append(f"crop_padding must be >= 0, got {crop_padding!r}")
    if problem := padding_problem(crop_padding, crop_padding_mode, min(IMAGE_SHAPE[1:]), prefix="crop_"):
        problems.append(problem)
    if not 0 <= color_jitter < 1:  # a contrast scale of 1 - color_jitter must stay positive
        problems.append(f"color_jitter must be in [0, 1), got {color_jitter!r}")
    if problems:
        raise ValueError("Invalid CIFAR10DataModule arguments: " + "; ".join(problems) + ".")
