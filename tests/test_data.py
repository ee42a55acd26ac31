from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import struct
import tarfile
import urllib.error
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import make_images, quiet_trainer, tiny_args, write_batches, write_folder
from PIL import ExifTags, Image

from cifar_lightning import CIFAR10DataModule, DataError, MLPClassifier
from cifar_lightning.constants import ARCHIVE_NAME, BATCHES_DIR, CLASSES, MEAN, STD
from cifar_lightning.data import cache, sources
from cifar_lightning.data.augment import PaddingMode, color_jitter, normalize, random_crop_flip
from cifar_lightning.data.sampling import ShardedBatchSampler, _InMemory
from cifar_lightning.run.cli import main


def all_train_images(dm: CIFAR10DataModule) -> tuple[torch.Tensor, torch.Tensor]:
    assert dm.data_train is not None and dm.data_val is not None
    return (
        torch.cat([dm.data_train.images, dm.data_val.images]),
        torch.cat([dm.data_train.labels, dm.data_val.labels]),
    )


def sorted_rows(images: torch.Tensor) -> np.ndarray:
    rows = images.reshape(len(images), -1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("layout", ["batches", "png"])
def test_reads_exact_pixels_and_labels(tmp_path: Path, layout: str) -> None:
    """Lossless sources come back pixel for pixel, in (N, 3, 32, 32) order, with matching labels."""
    root = write_batches(tmp_path / "d") if layout == "batches" else write_folder(tmp_path / "d")
    dm = CIFAR10DataModule(data_dir=str(root), val_split=20, download=False)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = all_train_images(dm)
    expected, expected_labels = make_images(10, seed=1)
    expected_chw = torch.from_numpy(expected).permute(0, 3, 1, 2)
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32)
    np.testing.assert_array_equal(sorted_rows(images), sorted_rows(expected_chw))
    for cls in range(10):  # each class's images carry that class's label
        np.testing.assert_array_equal(
            sorted_rows(images[labels == cls]), sorted_rows(expected_chw[torch.from_numpy(expected_labels) == cls])
        )


def test_jpeg_folder_and_test_split(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "jpg", suffix=".jpg")
    dm = CIFAR10DataModule(data_dir=str(root), val_split=0.2, download=False)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert dm.data_train is not None and dm.data_val is not None and dm.data_test is not None
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (80, 20, 40)
    assert dm.has_test_split()


def test_archive_is_verified_and_unpacked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_batches(tmp_path / "src")
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / ARCHIVE_NAME, "w:gz") as tar:
        tar.add(src / BATCHES_DIR, arcname=BATCHES_DIR)
    monkeypatch.setattr(sources, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DataError, match="md5"):
        CIFAR10DataModule(data_dir=str(data)).prepare_data()
    assert not (data / BATCHES_DIR).exists()  # nothing half-unpacked
    monkeypatch.setattr(sources, "ARCHIVE_MD5", sources.md5sum(data / ARCHIVE_NAME))
    dm = CIFAR10DataModule(data_dir=str(data), val_split=10)
    dm.prepare_data()
    dm.setup("fit")
    assert (data / BATCHES_DIR / "data_batch_1").is_file()
    assert dm.data_train is not None and len(dm.data_train) == 90


def test_decodes_once_then_loads_cache(folder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CIFAR10DataModule(data_dir=str(folder_dir), download=False, val_split=10).prepare_data()
    cached = sorted(p.name for p in (folder_dir / ".cache").iterdir())
    assert len(cached) == 2 and all(p.endswith(".pt") for p in cached)  # train and test, no temporary leftovers

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(sources, "read_folder", no_decoding)
    dm = CIFAR10DataModule(data_dir=str(folder_dir), download=False, val_split=10)
    dm.setup("fit")
    dm.setup("fit")  # a second call is harmless
    assert dm.data_train is not None and len(dm.data_train) == 90


def test_cache_is_rebuilt_when_the_data_changes(folder_dir: Path) -> None:
    CIFAR10DataModule(data_dir=str(folder_dir), val_split=10).prepare_data()
    extra = folder_dir / "train" / "cat" / "extra.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(extra)
    dm = CIFAR10DataModule(data_dir=str(folder_dir), val_split=10)
    dm.setup("fit")
    assert dm.data_train is not None and len(dm.data_train) == 91


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "other_tensors", "no_checksum"])
def test_a_damaged_cache_is_detected_and_decoded_again(damage: str, folder_dir: Path) -> None:
    images, labels = cache.load_split(folder_dir, "train", folder_dir / ".cache")
    [file] = (folder_dir / ".cache").glob("train-*.pt")
    data = bytearray(file.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":  # a byte inside the pixel record: the file still loads, with other pixels
        start = data.find(bytes(images[0].flatten()[:64].numpy()))
        assert start > 0
        data[start + 10] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    file.write_bytes(bytes(data))
    if damage == "other_tensors":
        torch.save({"images": images[:5], "labels": labels[:5], "crc32": torch.tensor(0)}, file)
    if damage == "no_checksum":  # as versions before the checksum wrote it
        torch.save({"images": images, "labels": labels}, file)
    expected = r"has no checksum \(an older version wrote it\)" if damage == "no_checksum" else "is damaged"
    with pytest.warns(UserWarning, match=f"{expected}; decoding the images again"):
        again = cache.load_split(folder_dir, "train", folder_dir / ".cache")
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache was written again, whole
        assert torch.equal(cache.load_split(folder_dir, "train", folder_dir / ".cache")[0], images)


def test_read_only_data_dir_caches_elsewhere(folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    dm = CIFAR10DataModule(data_dir=str(folder_dir), val_split=10)
    dm.prepare_data()
    assert not (folder_dir / ".cache").exists()
    assert list((tmp_path / "xdg" / "cifar_lightning").glob("*/train-folder-*.pt"))


def test_split_is_seeded_and_disjoint(batches_dir: Path) -> None:
    def val_images(seed: int) -> np.ndarray:
        dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=30, seed=seed)
        dm.setup("fit")
        assert dm.data_train is not None and dm.data_val is not None
        train, val = set(map(bytes, sorted_rows(dm.data_train.images))), sorted_rows(dm.data_val.images)
        assert not train & set(map(bytes, val))
        return val

    np.testing.assert_array_equal(val_images(1), val_images(1))
    assert not np.array_equal(val_images(1), val_images(2))


def test_validation_order_mixes_classes_for_partial_validation(folder_dir: Path) -> None:
    # image folders are read class by class; a partial validation must still see every kind of image
    dm = CIFAR10DataModule(data_dir=str(folder_dir), val_split=20, batch_size=10)
    dm.setup("fit")
    labels = torch.cat([y for _, y in dm.val_dataloader()]).tolist()
    assert labels != sorted(labels) and len(set(labels[:10])) > len(set(sorted(labels)[:10]))


def test_how_often_a_run_validates_does_not_change_the_model_it_trains(batches_dir: Path, tmp_path: Path) -> None:
    """Every pass over a DataLoader draws a seed from its generator; evaluation has its own, so validations do not
    consume the global random stream that training's crops and flips draw from."""
    weights = []
    for every in (1, 2):
        torch.manual_seed(0)
        model = MLPClassifier(hidden_sizes=(32,), whiten=False)
        dm = CIFAR10DataModule(
            data_dir=str(batches_dir), val_split=20, batch_size=16, crop_padding=2, alternate_flip=False
        )
        quiet_trainer(tmp_path / str(every), max_epochs=3, check_val_every_n_epoch=every).fit(model, datamodule=dm)
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], atol=0, rtol=0, msg=key)


def test_a_last_training_batch_of_one_image_is_dropped(folder_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(folder_dir), val_split=19, batch_size=16)  # 81 training images
    dm.setup("fit")
    assert [len(y) for _, y in dm.train_dataloader()] == [16] * 5
    args = tiny_args(folder_dir, tmp_path, "cnn")  # batch norm in training mode fails on a batch of one
    args[args.index("--data.val_split") + 1] = "19"
    assert main(args) == 0


def test_a_lightning_bolts_style_script_runs_against_it(folder_dir: Path, tmp_path: Path) -> None:
    """What a lightning-bolts user writes: attributes, setup(), default and settable transforms, shuffle."""
    dm = CIFAR10DataModule(data_dir=str(folder_dir), val_split=20, batch_size=16, shuffle=False)
    assert (dm.name, dm.num_classes, dm.dims, dm.num_samples) == ("cifar10", 10, (3, 32, 32), 49_980)
    dm.prepare_data()
    dm.setup()  # every stage
    assert dm.num_samples == 80 and dm.data_test is not None
    images, labels = next(iter(dm.train_dataloader()))
    assert torch.equal(labels, dm.data_train.labels[:16])  # type: ignore[union-attr]  # shuffle=False: split order
    x = dm.default_transforms()(images)
    assert x.dtype == torch.float32 and torch.allclose(x, normalize(images, MEAN, STD))
    seen: dict[str, int] = {"train": 0, "val": 0, "test": 0}

    def counting(stage: str, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def transform(batch: torch.Tensor) -> torch.Tensor:
            seen[stage] += len(batch)
            return dm.transform(batch, train=train)  # composed with the built-in one, as the docstring says

        return transform

    dm.train_transforms, dm.val_transforms = counting("train", True), counting("val", False)
    dm.test_transforms = counting("test", False)
    trainer = quiet_trainer(tmp_path, num_sanity_val_steps=0)
    model = MLPClassifier(hidden_sizes=(16,), whiten=False)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    assert seen == {"train": 80, "val": 20, "test": 40}


def test_from_tensors_trains_and_tests_on_images_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default data_dir, ./data, must stay untouched
    images, labels = make_images(10, seed=3)
    x, y = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
    dm = CIFAR10DataModule.from_tensors(x, y, x[:30], y[:30], val_split=20, batch_size=16)
    trainer = quiet_trainer(tmp_path)
    model = MLPClassifier(hidden_sizes=(16,), whiten=False)
    trainer.fit(model, datamodule=dm)
    [result] = trainer.test(model, datamodule=dm, verbose=False)
    assert dm.num_samples == 80 and 0 <= result["test/acc"] <= 1 and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"uint8 \(N, 3, 32, 32\) with N labels; got torch.float32"):
        CIFAR10DataModule.from_tensors(x.float(), y)


def test_loader_yields_uint8_batches_without_a_trainer(batches_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), batch_size=32, val_split=20)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (32,)
    assert len(dm.train_dataloader()) == 3  # 80 images in batches of 32
    assert sum(len(y) for _, y in dm.val_dataloader()) == 20
    x = dm.transform(images, train=True)
    assert x.dtype == torch.float32 and x.shape == images.shape


@pytest.mark.parametrize("n", [100, 101])
def test_ranks_get_disjoint_shards(n: int) -> None:
    data = _InMemory(torch.zeros(n, 1), torch.arange(n))

    def indices(rank: int, train: bool, epoch: int = 0) -> list[int]:
        sampler = ShardedBatchSampler(data, 8, train, False, even=train, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)
        return torch.cat(list(sampler)).tolist()

    for train in (True, False):
        a, b = indices(0, train), indices(1, train)
        assert not set(a) & set(b)
        if train:
            assert len(a) == len(b) == n // 2  # every rank takes the same number of steps
        else:
            assert sorted(a + b) == list(range(n))  # evaluation covers each sample exactly once
    assert indices(0, True, epoch=0) != indices(0, True, epoch=1)  # reshuffled every epoch
    assert indices(0, False) == sorted(indices(0, False))  # evaluation is not shuffled


def test_crop_flip_matches_a_per_sample_reference() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, padding=4)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for img, pad in zip(out, padded, strict=True):
        candidates = [pad[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(img, c) for c in candidates)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False), images)
    torch.manual_seed(1)
    many = random_crop_flip(images.repeat(50, 1, 1, 1), padding=4)
    assert len({bytes(m.numpy()) for m in many[::6]}) > 30  # different per sample, not per batch


@pytest.mark.parametrize(
    ("padding", "flip", "mode"),
    [(4, True, "constant"), (2, False, "constant"), (0, True, "constant"), (2, True, "reflect"), (4, False, "reflect")],
)
def test_crop_flip_draws_every_shift_and_mirror_uniformly(padding: int, flip: bool, mode: PaddingMode) -> None:
    image = (torch.arange(3 * 32 * 32, dtype=torch.int32) + 1).view(1, 3, 32, 32)  # every pixel unique, none 0
    # The reference pads the whole image as torchvision would (F.pad's reflect needs a float tensor; values are exact)
    padded = torch.nn.functional.pad(image.double(), (padding,) * 4, mode=mode).int()[0]
    size = 2 * padding + 1
    views = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(size) for dx in range(size)]
    views += [v.flip(-1) for v in views] if flip else []
    which = {bytes(v.contiguous().numpy()): i for i, v in enumerate(views)}
    torch.manual_seed(0)
    out = random_crop_flip(image.expand(20 * len(views), -1, -1, -1), padding=padding, flip=flip, padding_mode=mode)
    counts = torch.bincount(torch.tensor([which[bytes(o.numpy())] for o in out]), minlength=len(views))
    assert len(counts) == len(views) and counts.min() > 0 and counts.max() < 3 * 20  # 20 expected per view


def test_normalize_matches_torchvision() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = torchvision.transforms.functional.normalize(images.float() / 255, MEAN, STD)
    torch.testing.assert_close(normalize(images, MEAN, STD), expected)
    torch.testing.assert_close(normalize(images, None, None), images.float() / 255)


def test_validation_batches_are_not_augmented(batches_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(dm.transform(images, train=False), normalize(images, MEAN, STD))
    assert not torch.equal(dm.transform(images, train=True), dm.transform(images, train=False))


def test_color_jitter_shifts_and_scales_each_training_image_within_its_range() -> None:
    x = torch.randn(256, 3, 32, 32)
    out = color_jitter(x.clone(), 0.15).flatten(1)
    flat = x.flatten(1)
    # out = (x + shift) * scale per image: recover both from the first two pixels, then check every pixel
    scale = (out[:, 1] - out[:, 0]) / (flat[:, 1] - flat[:, 0])
    shift = out[:, 0] / scale - flat[:, 0]
    torch.testing.assert_close(out, (flat + shift[:, None]) * scale[:, None], atol=1e-4, rtol=1e-4)
    assert scale.min() >= 0.85 - 1e-4 and scale.max() <= 1.15 + 1e-4 and shift.abs().max() <= 0.15 + 1e-4
    assert scale.std() > 0.05 and shift.std() > 0.05  # drawn per image, not once per batch

    dm = CIFAR10DataModule(color_jitter=0.15, crop_padding=0, alternate_flip=True)  # the jitter is all that varies
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(dm.transform(images, train=False), normalize(images, MEAN, STD))
    assert not torch.allclose(dm.transform(images, train=True), normalize(images, MEAN, STD))
    plain = CIFAR10DataModule(crop_padding=0, alternate_flip=True)  # off by default: the training input is untouched
    torch.testing.assert_close(plain.transform(images, train=True), normalize(images, MEAN, STD))


# ---- bad input: one clear DataError/ValueError, nothing half-written ----


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"No CIFAR-10 data in .*Accepted layouts"):
        CIFAR10DataModule(data_dir=str(tmp_path / "nothing"), download=False).prepare_data()


def test_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: str, **kwargs: object) -> None:
        (Path(root) / ARCHIVE_NAME).write_bytes(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    target = tmp_path / "new"
    with pytest.raises(DataError, match=r"downloading it failed.*no network"):
        CIFAR10DataModule(data_dir=str(target)).prepare_data()
    assert not target.exists()


@pytest.mark.parametrize("change", ["missing", "extra", "misnamed"])
def test_class_folders_must_match(folder_dir: Path, change: str) -> None:
    train = folder_dir / "train"
    if change == "missing":
        for f in (train / "frog").iterdir():
            f.unlink()
        (train / "frog").rmdir()
    elif change == "extra":
        (train / "unicorn").mkdir()
    else:
        (train / "truck").rename(train / "Truck")
    with pytest.raises(DataError, match="exactly one folder per CIFAR-10 class") as err:
        CIFAR10DataModule(data_dir=str(folder_dir)).prepare_data()
    assert {"missing": "missing: frog", "extra": "unexpected: unicorn", "misnamed": "missing: truck"}[change] in str(
        err.value
    )
    assert not list(folder_dir.glob(".cache/*.pt"))


@pytest.mark.parametrize("bad", ["size", "unreadable"])
def test_bad_image_is_named(folder_dir: Path, bad: str) -> None:
    path = folder_dir / "train" / "dog" / "9999.png"
    if bad == "size":
        Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(path)
    else:
        path.write_bytes(b"not an image")
    with pytest.raises(
        DataError, match=f"{path}.*" + ("48x64 pixels" if bad == "size" else "Replace it with a good copy")
    ):
        CIFAR10DataModule(data_dir=str(folder_dir)).prepare_data()
    assert not list(folder_dir.glob(".cache/*"))


def test_test_split_asked_where_there_is_none(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", test_per_class=None)
    dm = CIFAR10DataModule(data_dir=str(root), val_split=10)
    dm.prepare_data()
    dm.setup("fit")
    assert not dm.has_test_split()
    with pytest.raises(DataError, match="has no test split"):
        dm.setup("test")


def test_val_split_as_large_as_the_training_set(batches_dir: Path) -> None:
    with pytest.raises(DataError, match="val_split=100 holds out 100 of the 100 training images"):
        CIFAR10DataModule(data_dir=str(batches_dir), val_split=100).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -4}, "batch_size must be a positive integer, got -4"),
        ({"val_split": 1.5}, "val_split as a fraction must be in"),
        ({"val_split": -1}, "val_split as a count must be >= 0"),
        ({"crop_padding_mode": "edge"}, "crop_padding_mode must be 'constant' or 'reflect', got 'edge'"),
        ({"crop_padding_mode": "reflect", "crop_padding": 32}, "reflect padding needs crop_padding < 32, got 32"),
        ({"color_jitter": 1.0}, r"color_jitter must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CIFAR10DataModule(**kwargs)


def test_alternate_flip_mirrors_each_image_every_other_epoch(batches_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), batch_size=16, val_split=20, alternate_flip=True, crop_padding=0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_train is not None
    originals = dm.data_train.images
    loader = dm.train_dataloader()
    mirrored = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        flags = torch.zeros(len(originals), dtype=torch.bool)
        for index, mirror in loader.sampler:  # type: ignore[attr-defined]
            images, _ = dm.data_train[(index, mirror)]
            assert torch.equal(images[mirror], originals[index][mirror].flip(-1))
            assert torch.equal(images[~mirror], originals[index][~mirror])
            flags[index] = mirror
        mirrored.append(flags)
    assert 0.3 < mirrored[0].float().mean() < 0.7  # a coin per image in epoch 0
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])
    batch = next(iter(loader))[0]
    assert torch.equal(dm.transform(batch, train=True), dm.transform(batch, train=False))  # no second, random flip


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("", r"data_dir .* is not readable: check its permissions"),
        ("train/cat", r"Could not list the folder .*/train/cat .*check its permissions"),
    ],
)
def test_an_unreadable_folder_is_one_clear_message(
    where: str, message: str, folder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listdir, denied_dir = Path.iterdir, folder_dir / where if where else folder_dir

    def denied(self: Path):  # type: ignore[no-untyped-def]
        if self == denied_dir:  # what a folder without read permission does (tests may run as root)
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DataError, match=message):
        CIFAR10DataModule(data_dir=str(folder_dir)).prepare_data()


def test_unwritable_cache_dir_is_one_clear_message(folder_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    dm = CIFAR10DataModule(data_dir=str(folder_dir), cache_dir=str(blocker / "cache"))
    with pytest.raises(DataError, match=r"Could not write the data cache .*Pass a writable folder as --data.cache_dir"):
        dm.prepare_data()
    assert blocker.read_text().startswith("a file")  # nothing half-written


# ---- issue 30: image modes, batch rows against labels, data behind symlinks ----

_RNG = np.random.default_rng(30)
_G8 = _RNG.integers(0, 256, (32, 32), dtype=np.uint8)
_A8 = _RNG.integers(0, 256, (32, 32), dtype=np.uint8)
_RGB8 = _RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
_G16 = _RNG.integers(0, 65536, (32, 32, 4)).astype(np.uint16)  # up to four 16-bit channels
_PALETTE = _RNG.integers(0, 256, (256, 3), dtype=np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def _png_bytes(array: np.ndarray, color_type: int) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit colour, which cameras and scanners do.

    ``array``: ``(32, 32, channels)`` uint16; ``color_type``: 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA (PNG's codes).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = array.astype(">u2").reshape(len(array), -1).view(np.uint8)
    body = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def _raw(mode: str, array: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, (32, 32), np.ascontiguousarray(array).tobytes())


def _palette(mode: str, array: np.ndarray) -> Image.Image:
    image = _raw(mode, array)
    image.putpalette(_PALETTE.tobytes())
    return image


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF's YCbCr (what JPEG and TIFF use) to RGB, in floating point."""
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    rgb = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)])
    return np.clip(np.rint(rgb), 0, 255).transpose(1, 2, 0)


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Naive CMYK, without a colour profile (as Pillow and browsers convert one that has none)."""
    ink = cmyk.astype(float)
    return np.rint((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255)


def _lab_grey_to_srgb(lightness: np.ndarray) -> np.ndarray:
    """The sRGB grey of CIE L* (0..255 for 0..100) with a = b = 0: neutral, so no white-point adaptation enters."""
    big_l = lightness.astype(float) * 100 / 255
    y = np.where(big_l > 8, ((big_l + 16) / 116) ** 3, big_l / 903.3)
    return _grey(np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055) * 255)


_CMYK = _RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
_YCC = _RNG.integers(64, 192, (32, 32, 3), dtype=np.uint8)  # away from the edges, where RGB would clip
_FLOAT = _RNG.random((32, 32), dtype=np.float32)

# case: (what to write: an image Pillow saves or the bytes of a file, the file suffix, the 8-bit RGB it must give,
# the tolerance). The image is opened in the mode named by the case (checked by the test).
_MODE_CASES: dict[str, tuple[Image.Image | bytes, str, np.ndarray, int]] = {
    "1": (Image.fromarray(_G8 > 127), ".png", _grey(np.where(_G8 > 127, 255, 0)), 0),
    "L": (Image.fromarray(_G8), ".png", _grey(_G8), 0),
    "LA": (Image.fromarray(np.stack([_G8, _A8], -1)), ".png", _grey(_G8), 0),  # alpha dropped, colour kept
    "P": (_palette("P", _G8), ".png", _PALETTE[_G8], 0),
    "P+transparency": (_palette("P", _G8), ".png", _PALETTE[_G8], 0),  # saved with a tRNS of per-entry alpha
    "PA": (_palette("PA", np.stack([_G8, _A8], -1)), ".tif", _PALETTE[_G8], 0),
    "RGB": (Image.fromarray(_RGB8), ".png", _RGB8, 0),
    "RGBA": (Image.fromarray(np.dstack([_RGB8, _A8])), ".png", _RGB8, 0),
    "CMYK": (_raw("CMYK", _CMYK), ".tif", _cmyk_to_rgb(_CMYK), 1),
    "YCbCr": (_raw("YCbCr", _YCC), ".tif", _ycbcr_to_rgb(_YCC), 1),
    # Raw LAB bytes are TIFF's: a* and b* signed, 0 neutral. 8-bit L* is coarser than sRGB in the mid-tones:
    # littlecms lands within 2 of the exact grey.
    "LAB": (_raw("LAB", np.dstack([_G8, np.zeros((32, 32, 2), np.uint8)])), ".tif", _lab_grey_to_srgb(_G8), 2),
    "I;16": (Image.fromarray(_G16[..., 0]), ".png", _grey(_G16[..., 0] >> 8), 1),
    "I;16B": (_raw("I;16B", _G16[..., 0].astype(">u2")), ".tif", _grey(_G16[..., 0] >> 8), 1),
    "I": (Image.fromarray(_G16[..., 0].astype(np.int32)), ".tif", _grey(_G16[..., 0] >> 8), 1),
    "F": (Image.fromarray(_FLOAT), ".tif", _grey(np.rint(_FLOAT * 255)), 1),
    "RGB 16-bit": (_png_bytes(_G16[..., :3], 2), ".png", _G16[..., :3] >> 8, 1),
    "RGBA 16-bit": (_png_bytes(_G16, 6), ".png", _G16[..., :3] >> 8, 1),
    "LA 16-bit": (_png_bytes(_G16[..., :2], 4), ".png", _grey(_G16[..., 0] >> 8), 1),
}


def _one_image_folder(root: Path, write: Callable[[Path], None], suffix: str) -> Path:
    """An image folder whose first image, train/airplane/0000 (and test/airplane/0000), is written by ``write``."""
    write_folder(root, train_per_class=1, test_per_class=1)
    for split in ("train", "test"):
        (root / split / "airplane" / "0000.png").unlink()
        write(root / split / "airplane" / f"0000{suffix}")
    return root


def _save(image: Image.Image | bytes, case: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        if isinstance(image, bytes):
            path.write_bytes(image)
        elif case == "P+transparency":
            image.save(path, transparency=_A8.flatten()[:256].tobytes())
        else:
            image.save(path)

    return write


@pytest.mark.parametrize("case", list(_MODE_CASES))
def test_every_image_mode_decodes_to_its_8bit_rgb(tmp_path: Path, case: str) -> None:
    """Issue 30: a 16-bit PNG came out 99.6% white; every mode Pillow opens gives its own pixels in 8-bit RGB."""
    image, suffix, expected, tolerance = _MODE_CASES[case]
    root = _one_image_folder(tmp_path / "d", _save(image, case), suffix)
    with Image.open(root / "train" / "airplane" / f"0000{suffix}") as opened:  # the mode the case is named after
        assert opened.mode == case.split(" ")[0].split("+")[0] or case.endswith("16-bit")
    for split in ("train", "test"):
        decoded = cache.load_split(root, split, tmp_path / "cache")[0][0].permute(1, 2, 0).numpy()
        error = np.abs(decoded.astype(float) - expected).max()
        assert error <= tolerance, f"{case} ({split}): off by up to {error:.0f} of 255"


@pytest.mark.parametrize("orientation", [3, 6, 8])  # upside down, and a quarter turn either way
def test_an_exif_orientation_is_applied_as_image_viewers_show_it(tmp_path: Path, orientation: int) -> None:
    """A phone photo stores its pixels as the sensor read them and says how to turn them: without the turn, a
    sideways image reached the network (and the cache)."""
    pixels = np.random.default_rng(orientation).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    root = _one_image_folder(tmp_path / "d", lambda path: Image.fromarray(pixels).save(path, exif=exif), ".png")
    turned = {3: np.rot90(pixels, 2), 6: np.rot90(pixels, -1), 8: np.rot90(pixels, 1)}[orientation]
    decoded = cache.load_split(root, "train", tmp_path / "cache")[0][0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(decoded, turned)


_UNFAITHFUL: dict[str, tuple[Image.Image, str, str]] = {
    "I beyond 16 bits": (Image.fromarray(np.full((32, 32), 70_000, np.int32)), ".tif", r"mode I .*70000"),
    "I negative": (Image.fromarray(np.full((32, 32), -5, np.int32)), ".tif", r"mode I .*-5"),
    "F beyond 0..1": (Image.fromarray(np.full((32, 32), 2.5, np.float32)), ".tif", r"mode F .*2\.5"),
    "F not finite": (Image.fromarray(np.full((32, 32), np.nan, np.float32)), ".tif", r"mode F .*nan"),
    # 16-bit with every value below 256: black as 16-bit, an image as 8-bit; which one the file means is unknowable
    "I;16 of 8-bit values": (Image.fromarray(_G8.astype(np.uint16)), ".png", r"mode I;16 .*below 256"),
}


@pytest.mark.parametrize("case", list(_UNFAITHFUL))
def test_image_modes_without_a_faithful_8bit_form_are_refused(tmp_path: Path, case: str) -> None:
    image, suffix, message = _UNFAITHFUL[case]
    root = _one_image_folder(tmp_path / "d", image.save, suffix)
    path = root / "train" / "airplane" / f"0000{suffix}"
    with pytest.raises(DataError, match=f"{path} .*{message}") as err:
        CIFAR10DataModule(data_dir=str(root)).prepare_data()
    assert "\n" not in str(err.value) and not list(root.glob(".cache/*"))


def test_a_cache_decoded_by_the_version_before_the_mode_fix_is_not_reused(tmp_path: Path) -> None:
    """The version before decoded 16-bit images as white and cached them; after the fix they are decoded again."""

    def fingerprint_before(data_dir: Path, split: str) -> str:  # cache.fingerprint as it was before issue 30
        digest = hashlib.sha1(f"folder:{split}".encode())
        for dirpath, dirnames, filenames in os.walk(data_dir / split):
            dirnames.sort()
            for name in sorted(filenames):
                stat = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(dirpath, data_dir / split)
                digest.update(f"{rel}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    image, suffix, expected, _ = _MODE_CASES["I;16"]
    root = _one_image_folder(tmp_path / "d", _save(image, "I;16"), suffix)
    white = torch.full((20, 3, 32, 32), 255, dtype=torch.uint8)
    labels = torch.arange(10).repeat_interleave(2)
    (root / ".cache").mkdir()
    old = {"images": white, "labels": labels, "crc32": torch.tensor(cache._checksum(white, labels))}
    torch.save(old, root / ".cache" / f"train-folder-{fingerprint_before(root, 'train')}.pt")
    decoded = cache.load_split(root, "train", root / ".cache")[0][0].permute(1, 2, 0).numpy()
    assert np.abs(decoded.astype(float) - expected).max() <= 1, "the white cache of the version before was loaded"
    assert len(list((root / ".cache").glob("train-*.pt"))) == 1  # the old cache is gone


def _rewrite_batch(path: Path, change: Callable[[dict], object]) -> None:
    path.write_bytes(pickle.dumps(change(pickle.loads(path.read_bytes()))))


def _with(entry: dict, **changes: object) -> dict:
    return entry | changes


_BATCH_FAULTS: dict[str, tuple[Callable[[dict], object], str]] = {
    "one row more than labels": (lambda e: _with(e, data=np.concatenate([e["data"], e["data"][:1]])), r"rows but"),
    "one row short": (lambda e: _with(e, data=e["data"][:-1]), r"rows but"),
    "rows of the wrong width": (lambda e: _with(e, data=e["data"][:, :-1]), r"shape \(\d+, 3071\)"),
    "pixels beyond 8 bits": (lambda e: _with(e, data=e["data"].astype(np.int16) * 2), r"int16 pixel values"),
    "float pixels": (lambda e: _with(e, data=e["data"] / 255), r"float64 pixel values"),
    "a label out of range": (lambda e: _with(e, labels=[10, *e["labels"][1:]]), r"labels from \d+ to 10"),
    "labels that are not integers": (lambda e: _with(e, labels=[float(y) for y in e["labels"]]), r"float64 labels"),
    "no labels": (lambda e: {k: v for k, v in e.items() if k != "labels"}, r"no 'labels' entry"),
    "not a dict": (lambda e: [e["data"], e["labels"]], r"holds a list"),
}


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch"])
@pytest.mark.parametrize("fault", list(_BATCH_FAULTS))
def test_a_batch_whose_rows_and_labels_disagree_is_named(batches_dir: Path, fault: str, name: str) -> None:
    """Issue 30: a row more than labels trained with misaligned labels; a row short ended in an IndexError."""
    change, message = _BATCH_FAULTS[fault]
    path = batches_dir / BATCHES_DIR / name
    _rewrite_batch(path, change)
    with pytest.raises(DataError, match=f"{path} .*{message}") as err:
        cache.load_split(batches_dir, "train" if name.startswith("data") else "test", batches_dir / ".cache")
    assert "\n" not in str(err.value) and not re.search(r"\b(delete|remove)\b", str(err.value), re.IGNORECASE)


def test_train_py_stops_on_misaligned_labels_with_one_line(
    batches_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = batches_dir / BATCHES_DIR / "data_batch_2"
    _rewrite_batch(path, _BATCH_FAULTS["one row more than labels"][0])
    assert main(tiny_args(batches_dir, tmp_path / "out")) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert f"{path} holds 21 image rows but 20 labels" in line


def _bytes_keys(entry: dict) -> dict:
    return {key.encode(): value for key, value in entry.items()}


@pytest.mark.parametrize("layout", ["batches", "archive"])
def test_batches_with_bytes_keys_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """What ``pickle.load(f, encoding="bytes")`` gives, re-saved: b'data' and b'labels' (issue 30)."""
    root = write_batches(tmp_path / "d")
    for path in (root / BATCHES_DIR).iterdir():
        _rewrite_batch(path, _bytes_keys)
    if layout == "archive":
        with tarfile.open(tmp_path / ARCHIVE_NAME, "w:gz") as tar:
            tar.add(root / BATCHES_DIR, arcname=BATCHES_DIR)
        shutil.rmtree(root / BATCHES_DIR)
        shutil.move(tmp_path / ARCHIVE_NAME, root / ARCHIVE_NAME)
        monkeypatch.setattr(sources, "ARCHIVE_MD5", sources.md5sum(root / ARCHIVE_NAME))
    dm = CIFAR10DataModule(data_dir=str(root), val_split=0)
    dm.prepare_data()
    for split, (per_class, seed) in {"train": (10, 1), "test": (4, 2)}.items():
        images, labels = cache.load_split(root, split, root / ".cache")  # type: ignore[arg-type]
        expected, expected_labels = make_images(per_class, seed)
        assert torch.equal(images, torch.from_numpy(expected).permute(0, 3, 1, 2))
        assert labels.tolist() == expected_labels.tolist()


def _damage(kind: str, root: Path) -> None:
    """Breaks ``root`` (an image folder, or pickled batches for "batch" and "archive") as ``kind`` says."""
    if kind == "batch":
        (root / BATCHES_DIR / "data_batch_1").write_bytes(b"\x80\x04 truncated")
    elif kind == "archive":
        with tarfile.open(root / ARCHIVE_NAME, "w:gz") as tar:
            tar.add(root / BATCHES_DIR, arcname=BATCHES_DIR)
        shutil.rmtree(root / BATCHES_DIR)
    elif kind == "image":
        (root / "train" / "cat" / "0003.png").write_bytes(b"not an image")
    elif kind == "image size":
        Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(root / "train" / "cat" / "0003.png")
    else:
        (root / "train" / "kitten").mkdir()


@pytest.mark.parametrize("kind", ["batch", "archive", "image", "image size", "class folders"])
def test_no_message_tells_the_user_to_delete_their_data(tmp_path: Path, kind: str) -> None:
    """Issue 30: a batch file that could not be read said "delete cifar-10-batches-py", which is the user's data."""
    root = write_batches(tmp_path / "d") if kind in ("batch", "archive") else write_folder(tmp_path / "d")
    _damage(kind, root)
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(data_dir=str(root)).prepare_data()
    assert not re.search(r"\b(delete|remove)\b", str(err.value), re.IGNORECASE), str(err.value)


def _write_bmp_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """train/<class>/NNNN.bmp: uncompressed, so every file is the same size whatever its pixels."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = root / "train" / CLASSES[label] / f"{i:04d}.bmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def _same_times(root: Path) -> None:
    """Every file gets one modification time, as copies made with ``cp -p`` or ``rsync -a`` can share."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


def _point(link: Path, target: Path) -> None:
    link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())


def _link_data(data: Path, source: Path, at: str) -> None:
    """Makes ``data`` show ``source`` through symbolic links: the split folder, each class folder, or each file."""
    top = BATCHES_DIR if at == "batches" else "train"
    if at in ("batches", "split"):
        _point(data / top, source / top)
        return
    for class_dir in sorted((source / "train").iterdir()):
        if at == "class":
            _point(data / "train" / class_dir.name, class_dir)
        else:
            for file in class_dir.iterdir():
                _point(data / "train" / class_dir.name / file.name, file)


@pytest.mark.parametrize("at", ["split", "class", "file", "batches"])
def test_repointing_a_symlink_invalidates_the_cache(tmp_path: Path, at: str) -> None:
    """Issue 30: class folders that were links, pointed at other folders, gave the old folders' cached pixels."""
    images, labels = make_images(2, seed=1)
    first, second = images, 255 - images  # the same sizes and times, other pixels
    if at == "batches":
        write_batches(tmp_path / "a")
        write_batches(tmp_path / "b")
        for path in (tmp_path / "b" / BATCHES_DIR).glob("*_batch*"):
            _rewrite_batch(path, lambda e: _with(e, data=255 - e["data"]))
    else:
        _write_bmp_folder(tmp_path / "a", first, labels)
        _write_bmp_folder(tmp_path / "b", second, labels)
    _same_times(tmp_path / "a")
    _same_times(tmp_path / "b")
    data = tmp_path / "data"
    _link_data(data, tmp_path / "a", at)
    before = cache.load_split(data, "train", tmp_path / "cache")[0]
    _link_data(data, tmp_path / "b", at)
    after = cache.load_split(data, "train", tmp_path / "cache")[0]
    assert torch.equal(after, 255 - before), "the cache of the folders the links pointed at before was loaded"


@pytest.mark.parametrize("at", ["batches", "train", "test", "archive", "class", "file"])
def test_a_dangling_symlink_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """A link whose target is gone (an unmounted disk) is said, not taken for missing data to download or skip."""

    def no_download(data_dir: Path) -> None:
        raise AssertionError(f"downloaded into {data_dir}")

    monkeypatch.setattr(sources, "download", no_download)
    data = tmp_path / "data"
    if at in ("class", "file", "test"):
        write_folder(data, test_per_class=None)
    link = {
        "batches": data / BATCHES_DIR,
        "train": data / "train",
        "test": data / "test",
        "archive": data / ARCHIVE_NAME,
        "class": data / "train" / "cat",
        "file": data / "train" / "cat" / "0013.png",
    }[at]
    shutil.rmtree(link, ignore_errors=True)
    _point(link, tmp_path / "unmounted" / "target")
    with pytest.raises(DataError, match=f"{link} is a symbolic link to .*unmounted/target, which cannot be followed"):
        dm = CIFAR10DataModule(data_dir=str(data), val_split=10)
        dm.prepare_data()
        dm.setup()


def test_a_link_loop_inside_the_data_does_not_hang(folder_dir: Path) -> None:
    """Following links (to see them re-pointed) must not follow a loop forever (a guard for the fix of issue 30)."""
    for name in ("cat", "dog"):
        (folder_dir / "train" / name / "loop").symlink_to(folder_dir / "train")
    assert len(cache.load_split(folder_dir, "train", folder_dir / ".cache")[1]) == 100
    assert len(cache.fingerprint(folder_dir, "train")) == 16
