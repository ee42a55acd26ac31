"""The exported model and the predict command: same answers as the trained model, without Lightning."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock
from helpers import make_images, run_dirs, tiny_args, write_folder
from PIL import Image

from cifar_lightning import CIFAR10DataModule
from cifar_lightning.constants import CLASSES
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.report import plots, predict
from cifar_lightning.report.export import export_net, load_exported
from cifar_lightning.run.cli import main


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def trained_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A tiny trained and exported run of each model, which the tests only read: built once per session, by the
    first xdist worker to ask (under a file lock), not once per worker (6 to 10 s each on one AVX2 core)."""
    session = tmp_path_factory.getbasetemp()
    shared = (session if worker_id == "master" else session.parent) / f"trained_{request.param}"  # this session's
    with FileLock(f"{shared}.lock"):  # filelock: a dependency of torch
        if not (shared / "done").exists():  # a build that failed half-way is started again
            shutil.rmtree(shared, ignore_errors=True)
            data = write_folder(shared / "data")
            assert main([*tiny_args(data, shared / "runs", request.param, epochs=2), "--export", "all"]) == 0
            (shared / "done").touch()
    [run] = run_dirs(shared / "runs")
    return run


def checkpoint_model(run: Path) -> CIFAR10Classifier:
    best = json.loads((run / "results.json").read_text())["best_checkpoint"]
    return predict.load_classifier(Path(best))


def test_export_says_nothing_a_user_cannot_act_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with caplog.at_level("WARNING"):
        export_net(net, tmp_path / "model.pt2", CLASSES)
    assert "Expect archive file" not in caplog.text  # torch's complaint about the temporary file's name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # and no temporary file left
    with pytest.raises(ValueError, match=r"writes \.pt2 or \.onnx files; got .*model\.pt"):
        export_net(net, tmp_path / "model.pt", CLASSES)


def test_exported_model_matches_the_checkpoint(trained_run: Path) -> None:
    exported, meta = load_exported(trained_run / "model.pt2")
    assert meta["classes"] == list(CLASSES) and meta["mean"] and meta["std"]
    module = checkpoint_model(trained_run)
    images = torch.from_numpy(make_images(3, seed=7)[0]).permute(0, 3, 1, 2).contiguous()  # uint8 (30, 3, 32, 32)
    dm = CIFAR10DataModule()
    with torch.no_grad():
        expected = module(dm.transform(images, train=False))
        got = exported(images.float() / 255)
    assert (got - expected).abs().max().item() <= 1e-4


def test_without_normalization_the_export_predict_and_figures_follow_the_data(folder_dir: Path, tmp_path: Path) -> None:
    """``--data.normalize false``: the network learned on 0..1 inputs, so nothing downstream may normalize them."""
    assert main([*tiny_args(folder_dir, tmp_path, "cnn"), "--data.normalize", "false"]) == 0
    [run] = run_dirs(tmp_path)
    module = checkpoint_model(run)
    assert module.input_normalization is None
    images = torch.from_numpy(make_images(2, seed=7)[0]).permute(0, 3, 1, 2).contiguous()
    inputs = CIFAR10DataModule(normalize=False).transform(images, train=False)  # what the network was trained on
    exported, meta = load_exported(run / "model.pt2")
    from_checkpoint, _ = predict.load_model(run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        expected = checkpoint_model(run)(inputs)
        assert (exported(images.float() / 255) - expected).abs().max().item() <= 1e-4
    assert meta["mean"] is None and meta["std"] is None
    last = predict.load_classifier(run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        assert torch.allclose(from_checkpoint(images.float() / 255), last(inputs), atol=1e-4)
    assert np.array_equal(plots.to_uint8(inputs.numpy(), None), images.numpy())  # the mistakes grid's pixels


def test_predict_gives_the_in_memory_models_classes(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, _ = make_images(2, seed=9)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image).save(paths[-1])
    module = checkpoint_model(trained_run)
    with torch.no_grad():
        x = CIFAR10DataModule().transform(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), train=False)
        expected = [CLASSES[i] for i in module(x).argmax(-1).tolist()]
    best = json.loads((trained_run / "results.json").read_text())["best_checkpoint"]
    for model_file in (trained_run / "model.pt2", Path(best)):
        assert predict.main([str(model_file), *map(str, paths)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split(": ")[1].split()[0] for line in lines] == expected
        assert all(line.count("%") == 3 for line in lines)  # top-3 with probabilities


def test_predict_resizes_and_skips_unreadable_files(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((48, 40, 3), 120, np.uint8)).save(big)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert predict.main([str(trained_run / "model.pt2"), str(broken), str(big)]) == 1
    captured = capsys.readouterr()
    assert f"cannot read {broken}" in captured.err and "resized to 32x32" in captured.err
    assert captured.out.startswith(f"{big}: ")


@pytest.mark.parametrize("kind", ["zeros", "empty", "truncated", "flipped"])
@pytest.mark.parametrize("suffix", [".pt2", ".ckpt"])
def test_predict_rejects_a_damaged_model_file(
    kind: str, suffix: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (trained_run / "model.pt2") if suffix == ".pt2" else trained_run / "checkpoints" / "last.ckpt"
    data = bytearray(good.read_bytes())
    if kind == "flipped":  # the zip's table of contents at the end, garbled
        data[-40:] = bytes(b ^ 0xFF for b in data[-40:])
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes({"zeros": b"\x00" * 100, "empty": b"", "truncated": bytes(data[: len(data) // 2])}.get(kind, data))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert predict.main([str(bad), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Could not load {bad}") and "Traceback" not in err


def test_onnx_export_matches_the_checkpoint(trained_run: Path) -> None:
    """Where onnx is installed (the [dev] extra), every run also leaves model.onnx; it runs without torch."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(trained_run / "model.onnx")
    meta = json.loads({p.key: p.value for p in model.metadata_props}["cifar_lightning.json"])
    assert meta["classes"] == list(CLASSES)
    images = torch.from_numpy(make_images(2, seed=5)[0]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        expected = checkpoint_model(trained_run)(CIFAR10DataModule().transform(images, train=False))
    [got] = ReferenceEvaluator(model).run(None, {"images": (images.float() / 255).numpy()})
    assert np.abs(got - expected.numpy()).max() <= 1e-4


def test_failed_onnx_export_warns_and_the_run_still_succeeds(
    folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_converter(*args: object, **kwargs: object) -> None:
        raise RuntimeError("No ONNX function found for aten.some_op")

    monkeypatch.setattr("torch.onnx.export", no_converter)  # what a converter gap in a torch release looks like
    with pytest.warns(UserWarning, match="ONNX export skipped .*No ONNX function found"):
        assert main([*tiny_args(folder_dir, tmp_path, "mlp"), "--export", "all"]) == 0
    [run] = run_dirs(tmp_path)
    assert (run / "model.pt2").is_file() and not (run / "model.onnx").exists()


def write_huge_png(path: Path, width: int, height: int) -> None:
    """A black 1-bit PNG of any size, compressed row by row: a few KB on disk whatever its pixel count."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # the filter byte, then the packed pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_pngs(folder: Path, count: int, seed: int = 9) -> list[Path]:
    paths = []
    for i, image in enumerate(make_images(1, seed=seed)[0][:count]):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def bad_image(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One file predict cannot classify, of the given kind."""
    path = tmp_path / f"bad_{kind}.png"
    if kind == "huge":  # 200 Mpx: over twice PIL's limit, where Image.open raises DecompressionBombError
        write_huge_png(path, 20_000, 10_000)
    elif kind == "over_limit":  # between the limit and twice it PIL only warns, then decodes it all
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    elif kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        Image.fromarray(make_images(1, seed=3)[0][0]).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "not_image":
        path.write_text("name,label\ncat.png,3\n")
    elif kind == "unreadable":  # chmod does not stop root: PIL's open is made to fail as it would for anyone else
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
        real_open = Image.open

        def refuse(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
            if Path(fp) == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refuse)
    return path  # "missing": never written


@pytest.mark.parametrize("kind", ["huge", "over_limit", "folder", "missing", "truncated", "not_image", "unreadable"])
def test_predict_names_a_bad_image_in_one_line_and_predicts_the_rest(
    kind: str, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = write_pngs(tmp_path, 2)
    bad = bad_image(kind, tmp_path, monkeypatch)
    assert predict.main([str(trained_run / "model.pt2"), str(first), str(bad), str(second)]) == 1
    captured = capsys.readouterr()
    assert [line.split(": ")[0] for line in captured.out.splitlines()] == [str(first), str(second)]
    [line] = captured.err.splitlines()  # one line, no traceback
    assert line.startswith("error: ") and str(bad) in line and "skipped" in line
    if kind == "huge":
        assert "20000x10000" in line


def test_predict_does_not_wait_on_a_pipe(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A named pipe (or other non-file) given as an image: opening it would block until something writes to it."""
    [image] = write_pngs(tmp_path, 1)
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(predict.main([str(trained_run / "model.pt2"), str(pipe), str(image)])), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    blocked = worker.is_alive()
    if blocked:  # let the reader stuck in open() go, so the thread ends with the test
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
    assert not blocked and result == [1]
    assert f"error: cannot read {pipe}: not a regular file; skipped" in capsys.readouterr().err


def test_predict_reads_16_bit_images_like_8_bit_ones(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 16-bit grayscale PNG (values 0..65535) holds the same picture as its 8-bit copy: same prediction."""
    gray = np.asarray(Image.fromarray(make_images(1, seed=4)[0][3]).convert("L"))
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    Image.fromarray(gray).save(eight)
    Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I;16")
    assert predict.main([str(trained_run / "model.pt2"), str(eight), str(sixteen)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].removeprefix(f"{eight}: ") == lines[1].removeprefix(f"{sixteen}: ")


def test_predict_classifies_many_images_a_batch_at_a_time(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thousands of images must not become one batch: the model's activations for all of them would not fit."""
    paths = write_pngs(tmp_path, 5)
    sizes: list[int] = []
    real_predict = predict.predict

    def counting(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        sizes.append(len(images))
        return real_predict(model, images)

    monkeypatch.setattr(predict, "predict", counting)
    monkeypatch.setattr(predict, "BATCH_SIZE", 2, raising=False)
    assert predict.main([str(trained_run / "model.pt2"), *map(str, paths)]) == 0
    assert sizes == [2, 2, 1]
    assert [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()] == list(map(str, paths))


def test_predict_refuses_an_onnx_model_and_names_the_pt2(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = trained_run / "model.onnx"
    if not onnx_file.is_file():
        pytest.skip("model.onnx is written only where onnx and onnxscript are installed")
    [image] = write_pngs(tmp_path, 1)
    assert predict.main([str(onnx_file), str(image)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: {onnx_file}") and "ONNX" in line and "truncated" not in line
    assert f"{trained_run / 'model.pt2'}" in line and not captured.out


def test_predict_given_a_run_folder_names_the_model_inside(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [image] = write_pngs(tmp_path, 1)
    assert predict.main([str(trained_run), str(image)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {trained_run} is a run folder") and str(trained_run / "model.pt2") in line


def test_predict_given_an_image_first_says_the_model_comes_first(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [image] = write_pngs(tmp_path, 1)
    assert predict.main([str(image), str(trained_run / "model.pt2")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {image} is an image, not a model: the model comes first")
