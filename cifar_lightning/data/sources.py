"""Where CIFAR-10 lives on disk, and how a split becomes one uint8 tensor.

Three layouts are read, detected from what is in ``data_dir`` (first match wins):

1. ``cifar-10-batches-py/``: the official pickled batches (what torchvision downloads and unpacks);
2. ``train/<class>/*`` and optionally ``test/<class>/*``: an image folder of PNG or JPEG files;
3. ``cifar-10-python.tar.gz``: the official archive, checked against its md5 and unpacked once into layout 1.

Whatever the source, a split is decoded once into a cache file (``cache.load_split``).

Images in any mode Pillow opens become 8-bit RGB (``to_rgb``): 16-bit and wider images are scaled, not clipped to
white; a mode with no faithful 8-bit form is refused with a ``DataError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
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

SplitName = Literal["train", "test"]


SourceKind = Literal["batches", "folder", "archive"]


ACCEPTED_LAYOUTS = (
    f"Accepted layouts: '{BATCHES_DIR}/' (the official pickled batches), 'train/<class>/*.png|jpg' with an "
    f"optional 'test/<class>/' (one folder per CIFAR-10 class: {', '.join(CLASSES)}), or the official archive "
    f"'{ARCHIVE_NAME}'."
)


# Part of every cache's fingerprint: bump it when decoding gives other pixels for the same files, so caches written
# by older versions (16-bit images decoded as white before 2, EXIF orientation ignored before 3) are decoded again.
DECODE_VERSION = 3


class DataError(RuntimeError):
    """A problem with the data on disk that the user has to fix; the message says what was found and what to do."""


def _check_link(path: Path) -> None:
    """Refuses a symbolic link that cannot be followed: its data is not missing but out of reach (an unmounted disk),
    and taking it for missing would download CIFAR-10 in its place or silently skip it."""
    if path.is_symlink() and not path.exists():
        raise DataError(
            f"{path} is a symbolic link to {os.readlink(path)}, which cannot be followed (missing, or a loop of "
            "links): mount or restore its target, or point the link at the data."
        )


def find_source(data_dir: Path) -> SourceKind | None:
    """Returns which of the three layouts ``data_dir`` holds, or None if it holds none of them."""
    for name in (BATCHES_DIR, "train", ARCHIVE_NAME):
        _check_link(data_dir / name)
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
        _check_link(data_dir / split)
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
            f"is not the python release. Replace it with a good download, unpack it yourself into {BATCHES_DIR}/ "
            "(which is then read as it is), or point --data.data_dir elsewhere."
        )
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".unpack-") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / BATCHES_DIR, data_dir / BATCHES_DIR)


def read_batches(data_dir: Path, split: SplitName) -> tuple[Tensor, Tensor]:
    """Reads the official pickled batches of one split, each checked to pair its image rows with its labels."""
    names = TRAIN_BATCHES if split == "train" else (TEST_BATCH,)
    images, labels = [], []
    for name in tqdm(names, desc=f"Reading CIFAR-10 {split} batches", leave=False):
        rows, batch_labels = _read_batch(data_dir / BATCHES_DIR / name)
        images.append(torch.from_numpy(rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)))
        labels.append(torch.from_numpy(batch_labels))
    return torch.cat(images), torch.cat(labels)


def _bad_batch(path: Path, what: str) -> DataError:
    return DataError(
        f"The CIFAR-10 batch file {path} {what}. Replace it with the file of that name from the official archive "
        f"{ARCHIVE_NAME}, or point --data.data_dir at other data."
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, 3072)`` uint8 rows and ``(N,)`` int64 labels of one batch file, or a DataError naming it."""
    _check_link(path)
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # a damaged pickle raises nearly any type (EOFError, KeyError, ImportError, ...)
        raise _bad_batch(path, f"could not be read ({type(err).__name__}: {err})") from None
    if not isinstance(entry, dict):
        raise _bad_batch(path, f"holds a {type(entry).__name__}, not the dict of 'data' and 'labels' it should")
    rows = _pixel_rows(_batch_entry(entry, "data", path), path)
    return rows, _batch_labels(_batch_entry(entry, "labels", path), len(rows), path)


def _batch_entry(entry: dict[Any, Any], key: str, path: Path) -> Any:
    """``entry[key]``, under a str key (the official files read with latin1) or a bytes one (what a batch re-saved
    after ``pickle.load(f, encoding="bytes")`` holds)."""
    for name in (key, key.encode()):
        if name in entry:
            return entry[name]
    found = ", ".join(sorted(repr(k) for k in entry)[:8])
    raise _bad_batch(path, f"has no '{key}' entry (found: {found or 'nothing'})")


def _as_array(values: Any, what: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as err:  # ragged lists, objects numpy cannot hold in one array
        raise _bad_batch(path, f"holds {what} that are not one array ({err})") from None


def _pixel_rows(data: Any, path: Path) -> np.ndarray:
    """``data`` as ``(N, 3072)`` uint8; wider integers only when every value fits (a cast would wrap them)."""
    rows = _as_array(data, "pixel values", path)
    if rows.ndim != 2 or rows.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise _bad_batch(path, f"holds image data of shape {rows.shape}; the official batches hold (N, 3072) rows")
    if rows.dtype == np.uint8:
        return rows
    whole = np.issubdtype(rows.dtype, np.integer) and (rows.size == 0 or (rows.min() >= 0 and rows.max() <= 255))
    if not whole:
        span = f" from {rows.min()} to {rows.max()}" if rows.size and rows.dtype.kind in "iuf" else ""
        raise _bad_batch(path, f"holds {rows.dtype} pixel values{span}; the official batches hold uint8 (0..255)")
    return rows.astype(np.uint8)


def _batch_labels(labels: Any, rows: int, path: Path) -> np.ndarray:
    """``labels`` as ``(rows,)`` int64 in 0..9: one label per image row, or a DataError naming the file."""
    found = _as_array(labels, "labels", path)
    if found.ndim != 1 or found.dtype == np.bool_ or not np.issubdtype(found.dtype, np.integer):
        raise _bad_batch(path, f"holds {found.dtype} labels of shape {found.shape}; the official hold a list of ints")
    if len(found) != rows:
        raise _bad_batch(path, f"holds {rows} image rows but {len(found)} labels: each row needs exactly one label")
    if len(found) and (found.min() < 0 or found.max() >= len(CLASSES)):
        raise _bad_batch(path, f"holds labels from {found.min()} to {found.max()}; CIFAR-10 labels are 0..9")
    return found.astype(np.int64)


def _entries(folder: Path) -> list[Path]:
    """The visible entries of ``folder``, none of them a link that cannot be followed."""
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as err:
        raise DataError(f"Could not list the folder {folder} ({err}): check its permissions.") from None
    for path in entries:
        _check_link(path)
    return entries


def _class_dirs(split_dir: Path) -> list[Path]:
    found = {p.name for p in _entries(split_dir) if p.is_dir()}
    missing, extra = sorted(set(CLASSES) - found), sorted(found - set(CLASSES))
    if missing or extra:
        raise DataError(
            f"The image folder {split_dir} must hold exactly one folder per CIFAR-10 class ({', '.join(CLASSES)}); "
            f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'}. Rename folders to "
            "match, or move the others out of it."
        )
    return [split_dir / name for name in CLASSES]


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(p for p in _entries(class_dir) if p.is_file())
    if not files:
        raise DataError(f"The class folder {class_dir} holds no images; every class needs at least one.")
    return files


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_RESAVE = "Save it as an 8-bit RGB or greyscale PNG, or move it out of the data folder."


def to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """``img`` (any mode Pillow opens) as 8-bit RGB, or a DataError naming ``path`` and the mode.

    16-bit values are scaled by ``>> 8`` (as Pillow reads 16-bit RGB PNGs), never clipped to white; ``I`` (32-bit
    integers) is read as 16-bit and ``F`` (floating point) as 0..1; alpha and palette transparency are dropped, the
    colour kept as stored (as torchvision's loader does); the other modes (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``,
    ``LAB``, ...) convert as Pillow converts them. What has no faithful 8-bit form is refused, not guessed at.
    An EXIF orientation tag (a phone photo's) is applied first, as image viewers apply it (torchvision's PIL loader
    does not): a photo left sideways is another input to the network.
    """
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # a camera's rotation tag: the pixels as viewers show them
        img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return Image.fromarray(_to_8bit(np.asarray(img), img.mode, path)).convert("RGB")
    if img.mode == "La":  # premultiplied alpha, which Pillow converts to nothing else
        img = img.convert("LA")
    elif img.mode == "P" and "transparency" in img.info:  # through RGBA, as Pillow asks (else it warns)
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise DataError(
            f"The image {path} has mode {img.mode}, which has no RGB form here ({err}). {_RESAVE}"
        ) from None


def _to_8bit(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """8-bit values of a 16-bit, 32-bit integer (``I``) or floating point (``F``) image, or a DataError."""
    low, high = values.min(), values.max()
    if mode == "F":
        if not (np.isfinite(values).all() and low >= 0 and high <= 1):
            raise DataError(
                f"The image {path} has mode F (floating point) with values from {low:g} to {high:g}; "
                f"only values in 0..1 are read. {_RESAVE}"
            )
        return np.rint(values * 255).astype(np.uint8)
    if low < 0 or high > 65535:
        raise DataError(
            f"The image {path} has mode {mode} with values from {low} to {high}, beyond 16 bits: "
            f"there is no faithful 8-bit form. {_RESAVE}"
        )
    if 0 < high < 256:  # black as 16-bit, an image as 8-bit (values saved 16-bit by mistake): which is unknowable
        raise DataError(
            f"The image {path} has mode {mode} (16-bit) but every value is below 256 (max {high}): "
            "read as 16-bit it is black. If it holds 8-bit values, save it as an 8-bit PNG; if it is meant to be "
            "black, move it out of the data folder."
        )
    return (values.astype(np.uint32) >> 8).astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            array = np.asarray(to_rgb(img, path))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"Could not read the image {path} ({err}). Replace it with a good copy, or move it out of the data folder."
        ) from None
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(
            f"The image {path} is {array.shape[1]}x{array.shape[0]} pixels; CIFAR-10 images are "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}. Resize it, or move it out of the data folder."
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
