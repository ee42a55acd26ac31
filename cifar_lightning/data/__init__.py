"""The product's input: CIFAR-10 from any of its on-disk forms, held in memory, augmented in batches."""

from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.data.sources import DataError

__all__ = ["CIFAR10DataModule", "DataError"]
