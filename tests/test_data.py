from __future__ import annotations

import tarfile
import urllib.error
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import make_images, quiet_trainer, tiny_args, write_batches, write_folder
from PIL import Image

from cifar_lightning import CIFAR10DataModule, DataError, MLPClassifier
from cifar_lightning.constants import ARCHIVE_NAME, BATCHES_DIR, MEAN, STD
from cifar_lightning.data import sources
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
    cache = sorted(p.name for p in (folder_dir / ".cache").iterdir())
    assert len(cache) == 2 and all(p.endswith(".pt") for p in cache)  # train and test, no temporary leftovers

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
    images, labels = sources.load_split(folder_dir, "train", folder_dir / ".cache")
    [cache] = (folder_dir / ".cache").glob("train-*.pt")
    data = bytearray(cache.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":  # a byte inside the pixel record: the file still loads, with other pixels
        start = data.find(bytes(images[0].flatten()[:64].numpy()))
        assert start > 0
        data[start + 10] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    cache.write_bytes(bytes(data))
    if damage == "other_tensors":
        torch.save({"images": images[:5], "labels": labels[:5], "crc32": torch.tensor(0)}, cache)
    if damage == "no_checksum":  # as versions before the checksum wrote it
        torch.save({"images": images, "labels": labels}, cache)
    expected = r"has no checksum \(an older version wrote it\)" if damage == "no_checksum" else "is damaged"
    with pytest.warns(UserWarning, match=f"{expected}; decoding the images again"):
        again = sources.load_split(folder_dir, "train", folder_dir / ".cache")
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache was written again, whole
        assert torch.equal(sources.load_split(folder_dir, "train", folder_dir / ".cache")[0], images)


def test_read_only_data_dir_caches_elsewhere(folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sources.os, "access", lambda path, mode: False)
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
    with pytest.raises(DataError, match=f"{path}.*" + ("48x64 pixels" if bad == "size" else "Remove or replace")):
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


def test_unreadable_data_dir_is_one_clear_message(folder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listdir = Path.iterdir

    def denied(self: Path):  # type: ignore[no-untyped-def]
        if self == folder_dir:  # what a folder without read permission does (tests may run as root)
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DataError, match=r"data_dir .* is not readable: check its permissions"):
        CIFAR10DataModule(data_dir=str(folder_dir)).prepare_data()


def test_unwritable_cache_dir_is_one_clear_message(folder_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    dm = CIFAR10DataModule(data_dir=str(folder_dir), cache_dir=str(blocker / "cache"))
    with pytest.raises(DataError, match=r"Could not write the data cache .*Pass a writable folder as --data.cache_dir"):
        dm.prepare_data()
    assert blocker.read_text().startswith("a file")  # nothing half-written
