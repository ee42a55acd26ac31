"""Where CIFAR-10 lives on disk, and how a split becomes one uint8 tensor.

Three layouts are read, detected from what is in ``data_dir`` (first match wins):

1. ``cifar-10-batches-py/``: the official pickled batches (what torchvision downloads and unpacks);
2. ``train/<class>/*`` and optionally ``test/<class>/*``: an image folder of PNG or JPEG files;
3. ``cifar-10-python.tar.gz``: the official archive, checked against its md5 and unpacked once into layout 1.

Whatever the source, a split is decoded once into a cache file (images ``(N, 3, 32, 32)`` uint8, labels ``(N,)``
int64) that later runs load in about a second. Caches are written to a temporary file and renamed into place, so
a run killed while writing never leaves a half-written cache behind, and carry a CRC-32 of their contents: a cache
damaged later (truncated, bytes changed) is detected on loading, said in a warning, and decoded again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from cifar_lightning.constants import (
    ARCHIVE_MD5,
    ARCHIVE_NAME,
    BATCHES_DIR,
    CLASSES,
    IMAGE_SIZE,
    TEST_BATCH,
    TRAIN_BATCHES,
)
from cifar_lightning.files import atomic_target

SplitName = Literal["train", "test"]
SourceKind = Literal["batches", "folder", "archive"]

ACCEPTED_LAYOUTS = (
    f"Accepted layouts: '{BATCHES_DIR}/' (the official pickled batches), 'train/<class>/*.png|jpg' with an "
    f"optional 'test/<class>/' (one folder per CIFAR-10 class: {', '.join(CLASSES)}), or the official archive "
    f"'{ARCHIVE_NAME}'."
)


class DataError(RuntimeError):
    """A problem with the data on disk that the user has to fix; the message says what was found and what to do."""


def find_source(data_dir: Path) -> SourceKind | None:
    """Returns which of the three layouts ``data_dir`` holds, or None if it holds none of them."""
    if (data_dir / BATCHES_DIR).is_dir():
        return "batches"
    if (data_dir / "train").is_dir():
        return "folder"
    if (data_dir / ARCHIVE_NAME).is_file():
        return "archive"
    return None


def has_split(data_dir: Path, split: SplitName) -> bool:
    """Whether ``data_dir`` holds ``split``: the official formats always have both, an image folder may lack test/."""
    source = find_source(data_dir)
    if source == "folder":
        return (data_dir / split).is_dir()
    return source is not None


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_archive(data_dir: Path) -> None:
    """Checks the official archive's md5 and unpacks it into ``data_dir/cifar-10-batches-py`` in one rename."""
    archive = data_dir / ARCHIVE_NAME
    found = md5sum(archive)
    if found != ARCHIVE_MD5:
        raise DataError(
            f"{archive} has md5 {found}, but the official CIFAR-10 archive has {ARCHIVE_MD5}: the file is damaged or "
            "is not the python release. Delete it and download it again, or point --data.data_dir elsewhere."
        )
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".unpack-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / BATCHES_DIR, data_dir / BATCHES_DIR)


def read_batches(data_dir: Path, split: SplitName) -> tuple[Tensor, Tensor]:
    """Reads the official pickled batches of one split."""
    names = TRAIN_BATCHES if split == "train" else (TEST_BATCH,)
    images, labels = [], []
    for name in tqdm(names, desc=f"Reading CIFAR-10 {split} batches", leave=False):
        path = data_dir / BATCHES_DIR / name
        try:
            with path.open("rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
            images.append(torch.from_numpy(data))
            labels.append(torch.as_tensor(entry["labels"], dtype=torch.int64))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise DataError(
                f"Could not read the CIFAR-10 batch file {path} ({type(err).__name__}: {err}). It is missing or "
                f"damaged: delete {data_dir / BATCHES_DIR} and unpack or download the data again."
            ) from None
    return torch.cat(images), torch.cat(labels)


def _class_dirs(split_dir: Path) -> list[Path]:
    found = {p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    missing, extra = sorted(set(CLASSES) - found), sorted(found - set(CLASSES))
    if missing or extra:
        raise DataError(
            f"The image folder {split_dir} must hold exactly one folder per CIFAR-10 class ({', '.join(CLASSES)}); "
            f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'}. Rename or remove "
            "folders to match."
        )
    return [split_dir / name for name in CLASSES]


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"The class folder {class_dir} holds no images; every class needs at least one.")
    return files


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Could not read the image {path} ({err}). Remove or replace the file.") from None
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(
            f"The image {path} is {array.shape[1]}x{array.shape[0]} pixels; CIFAR-10 images are "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}. Resize it or remove it from the folder."
        )
    return array


def read_folder(data_dir: Path, split: SplitName) -> tuple[Tensor, Tensor]:
    """Decodes ``data_dir/<split>/<class>/*`` (PNG, JPEG, anything PIL reads) in file-name order."""
    files, labels = [], []
    for label, class_dir in enumerate(_class_dirs(data_dir / split)):
        class_files = _image_files(class_dir)
        files += class_files
        labels += [label] * len(class_files)
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=f"Decoding {split} images in {data_dir}", unit="img")):
        images[i] = _decode(path)
    # (N, H, W, C) -> (N, C, H, W), made contiguous so a batch is one gather of whole images.
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)


def fingerprint(data_dir: Path, split: SplitName) -> str:
    """A hash of the names, sizes and modification times of a split's files: it changes when the data does."""
    source = find_source(data_dir)
    root = data_dir / (split if source == "folder" else BATCHES_DIR)
    digest = hashlib.sha1(f"{source}:{split}".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stat = os.stat(os.path.join(dirpath, name))
            digest.update(f"{os.path.relpath(dirpath, root)}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def default_cache_dir(data_dir: Path) -> Path:
    """``data_dir/.cache`` when it is writable, else a per-user cache folder keyed by the data folder's path."""
    if os.access(data_dir, os.W_OK):
        return data_dir / ".cache"
    user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cifar_lightning"
    return user_cache / hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]


def _checksum(images: Tensor, labels: Tensor) -> int:
    """CRC-32 of the pixels and labels, read in place (0.02 s for 150 MB of training images here)."""
    return zlib.crc32(labels.numpy().data, zlib.crc32(images.numpy().data))


def _read_cache(path: Path) -> tuple[Tensor, Tensor] | str:
    """The cached split, or why it cannot be used: damaged (unreadable, the wrong shape, failing its checksum), or
    written before caches carried a checksum."""
    try:
        entry = torch.load(path, weights_only=True)
        images, labels = entry["images"], entry["labels"]
        whole = images.dtype == torch.uint8 and images.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        if "crc32" not in entry:
            return "has no checksum (an older version wrote it)"
        whole = whole and len(images) == len(labels) and int(entry["crc32"]) == _checksum(images, labels)
    except Exception:  # truncated, not a zip, missing keys: every way a file breaks
        return "is damaged"
    return (images, labels) if whole else "is damaged"


def _save_atomic(obj: dict[str, Tensor], path: Path) -> None:
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def load_split(data_dir: Path, split: SplitName, cache_dir: Path) -> tuple[Tensor, Tensor]:
    """Returns ``(images, labels)`` of a split, decoding it on the first call and loading the cache afterwards."""
    source = find_source(data_dir)
    if source is None or source == "archive":
        raise DataError(f"No unpacked CIFAR-10 data in {data_dir}: call prepare_data() first. {ACCEPTED_LAYOUTS}")
    cache = cache_dir / f"{split}-{source}-{fingerprint(data_dir, split)}.pt"
    if cache.is_file():
        cached = _read_cache(cache)
        if not isinstance(cached, str):
            return cached
        warnings.warn(f"The data cache {cache} {cached}; decoding the images again.", stacklevel=2)
    images, labels = read_batches(data_dir, split) if source == "batches" else read_folder(data_dir, split)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{split}-{source}-*.pt"):
            stale.unlink()
        _save_atomic({"images": images, "labels": labels, "crc32": torch.tensor(_checksum(images, labels))}, cache)
    except OSError as err:
        raise DataError(
            f"Could not write the data cache {cache} ({err}). Pass a writable folder as --data.cache_dir."
        ) from None
    return images, labels


def download(data_dir: Path) -> None:
    """Fetches and unpacks the official archive with torchvision; a failure names the folder and the layouts."""
    from torchvision.datasets import CIFAR10  # imported here: only this rarely used path needs it

    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(data_dir), train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError on bad md5
        # Leave nothing half-written behind: a partial archive would be mistaken for data by the next run.
        (data_dir / ARCHIVE_NAME).unlink(missing_ok=True)
        shutil.rmtree(data_dir / BATCHES_DIR, ignore_errors=True)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise DataError(
            f"CIFAR-10 is not in {data_dir} and downloading it failed ({type(err).__name__}: {err}). Put the data "
            f"there yourself or pass --data.data_dir pointing at it. {ACCEPTED_LAYOUTS}"
        ) from None
