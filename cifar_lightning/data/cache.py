"""The decoded-split cache: a split is decoded once into a file (images ``(N, 3, 32, 32)`` uint8, labels ``(N,)``
int64) that later runs load in about a second.

Caches are written to a temporary file and renamed into place, so a run killed while writing never leaves a
half-written cache behind, and carry a CRC-32 of their contents: a cache damaged later (truncated, bytes changed) is
detected on loading, said in a warning, and decoded again. A cache is keyed by a fingerprint of the files it was
decoded from, followed through symbolic links, so a link re-pointed at other data is decoded again too.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cifar_lightning.constants import BATCHES_DIR, IMAGE_SIZE
from cifar_lightning.data import sources
from cifar_lightning.data.sources import ACCEPTED_LAYOUTS, DECODE_VERSION, DataError, SplitName, find_source
from cifar_lightning.files import atomic_target


def fingerprint(data_dir: Path, split: SplitName) -> str:
    """A hash of what a split is decoded from: each folder's real path (through symbolic links), and each file's name,
    size, modification and change times (and real path when it is a link). It changes when the data does, including
    when a link is re-pointed at other data or a file is replaced by one of the same size and modification time."""
    source = find_source(data_dir)
    root = data_dir / (split if source == "folder" else BATCHES_DIR)
    digest = hashlib.sha1(f"{source}:{split}:{DECODE_VERSION}".encode())
    _hash_tree(str(root), ".", digest, set())
    return digest.hexdigest()[:16]


def _hash_tree(folder: str, rel: str, digest: Any, seen: set[str]) -> None:
    """Adds ``folder`` (``rel`` below the root) to ``digest``, following links into the folders they point at."""
    real = os.path.realpath(folder)
    digest.update(f"{rel}->{real}\n".encode())
    if real in seen:  # a link back to a folder already hashed: following it would loop (or repeat it)
        return
    seen.add(real)
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as err:  # unreadable: the readers say so; here it is one more state of the data
        digest.update(f"unreadable:{err.errno}\n".encode())
        return
    for entry in entries:
        if entry.is_dir():  # follows links, as the readers do
            _hash_tree(entry.path, f"{rel}/{entry.name}", digest, seen)
        else:
            digest.update(f"{entry.name}:{_file_key(entry)}\n".encode())


def _file_key(entry: os.DirEntry[str]) -> str:
    link = entry.is_symlink()  # from the directory listing: no system call
    try:
        stat = entry.stat()  # of the target, for a link
    except OSError:  # a link that cannot be followed: the readers name it
        return f"unreachable->{os.readlink(entry.path) if link else ''}"
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{os.path.realpath(entry.path) if link else ''}"


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
    images, labels = (
        sources.read_batches(data_dir, split) if source == "batches" else sources.read_folder(data_dir, split)
    )
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
