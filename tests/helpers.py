"""What the tests share: synthetic CIFAR-10 written in the real on-disk formats, tiny-run settings and flags, the
W&B offline record reader, and the probe callbacks tests add to train.py runs (``--trainer.callbacks+=helpers.Name``;
tests/ is on the path)."""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from cifar_lightning.constants import BATCHES_DIR, CLASSES, TEST_BATCH, TRAIN_BATCHES

# Tests that start train.py in a subprocess: a tiny run takes 5 to 15 s on either CPU class, but a 300 s limit once
# failed on an AVX2-only CPU shared with other work (issue 13). The limit is there to turn a hang into a failure.
SUBPROCESS_TIMEOUT = 900


def make_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Easy but not trivial images: each class has its own colour and stripe direction, plus noise.

    Returns images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)``, classes interleaved.
    """
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(0).integers(40, 216, size=(len(CLASSES), 3))
    labels = np.tile(np.arange(len(CLASSES)), per_class)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) * 0.8)[..., None] * 30
        noise = rng.normal(0, 12, size=(32, 32, 3))
        images[i] = np.clip(palette[label] + stripes + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_batches(root: Path, train_per_class: int = 10, test_per_class: int = 4) -> Path:
    """The official python layout: five training batches and a test batch, dicts of (N, 3072) uint8 rows."""
    folder = root / BATCHES_DIR
    folder.mkdir(parents=True)
    images, labels = make_images(train_per_class, seed=1)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CHW order, like the real files
    for name, part in zip(TRAIN_BATCHES, np.array_split(np.arange(len(labels)), len(TRAIN_BATCHES)), strict=True):
        entry = {
            "batch_label": name,
            "labels": labels[part].tolist(),
            "data": rows[part],
            "filenames": [f"img_{i}.png" for i in part],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    test_images, test_labels = make_images(test_per_class, seed=2)
    test_rows = test_images.transpose(0, 3, 1, 2).reshape(len(test_images), -1)
    (folder / TEST_BATCH).write_bytes(pickle.dumps({"labels": test_labels.tolist(), "data": test_rows}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return root


def write_folder(root: Path, train_per_class: int = 10, test_per_class: int | None = 4, suffix: str = ".png") -> Path:
    """The image-folder layout: train/<class>/NNNN.png (and test/ unless test_per_class is None)."""
    splits = {"train": (train_per_class, 1), "test": (test_per_class, 2)}
    for split, (per_class, seed) in splits.items():
        if per_class is None:
            continue
        images, labels = make_images(per_class, seed)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = root / split / CLASSES[label] / f"{i:04d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return root


def quiet_trainer(tmp_path: Path, **overrides: Any) -> L.Trainer:
    """A one-epoch CPU Trainer for a test's tiny fit: no progress bar, summary, logger or checkpoints unless the
    test asks (``overrides``)."""
    settings: dict[str, Any] = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "default_root_dir": tmp_path,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
    }
    return L.Trainer(**(settings | overrides))


def tiny_args(data_dir: Path, out: Path, model: str = "mlp", epochs: int = 1) -> list[str]:
    """train.py flags for a run of a few seconds on the synthetic data."""
    # MLP whitening off: its 3,072-pixel eigendecomposition would dominate a tiny run (test_models covers it)
    size = (
        ["--model.hidden_sizes", "[64]", "--model.whiten", "false"] if model == "mlp" else ["--model.widths", "[8,16]"]
    )
    return [
        "--model",
        model,
        *size,
        *flags(
            {
                "--data.data_dir": data_dir,
                "--data.batch_size": 16,
                "--data.val_split": 20,
                "--trainer.max_epochs": epochs,
                "--trainer.default_root_dir": out,
                "--trainer.enable_progress_bar": "false",
                "--trainer.enable_model_summary": "false",
                "--trainer.accelerator": "cpu",
                "--trainer.precision": "32-true",
                "--trainer.log_every_n_steps": 1,
                "--seed_everything": 1,
                "--wandb": "false",
                "--export": "pt2",  # the ONNX export (a second a run) is tested where it is the subject: test_export.py
            }
        ),
    ]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/*/config.yaml"))


def read_wandb_records_until(path: Path, done: Callable[[list], bool], timeout: float = 30.0) -> list:
    """``read_wandb_records`` once ``done(records)`` holds, or after ``timeout`` seconds: wandb's service process
    writes the offline file, and can still be appending a finished run's last records (its exit record, artifacts)
    after ``run.finish`` has returned (a CI run of 2026-11-28 read the file before its exit record)."""
    deadline = time.monotonic() + timeout
    while not done(records := read_wandb_records(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return records


def read_wandb_run_records(path: Path) -> list:
    """The run records (``record.run``) of an offline ``.wandb`` file, waiting for wandb's service to write one: a
    CI run of 2026-12-03 read a resumed run's file, after ``main`` had returned, before its run record was in it."""
    records = read_wandb_records_until(path, lambda found: any(r.HasField("run") for r in found))
    return [r.run for r in records if r.HasField("run")]


def read_wandb_records(path: Path) -> list:
    """The records of an offline ``.wandb`` file (a LevelDB-style log of protobuf records: 7-byte file header, 32 KiB
    blocks, each chunk with a 7-byte header of crc, little-endian length and type: 1 full, 2 first, 3 middle,
    4 last). wandb 0.31 ships no Python reader, so tests read the file themselves to check what reaches W&B."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32 * 1024, 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a chunk wandb's service is still appending: not a record yet
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending += chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf class
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


def flags(values: dict[str, object]) -> list[str]:
    """``{"--data.batch_size": 16, ...}`` as train.py arguments, in order (a value None gives the flag alone)."""
    return [str(part) for flag, value in values.items() for part in ((flag,) if value is None else (flag, value))]


class SignalAt(L.Callback):
    """Sends ``signal_name`` (``SIGTERM``, ``SIGINT``, ``SIGKILL``) to this process once ``step`` steps are done;
    under DDP on every rank (as SLURM does), or only on rank ``rank``."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", rank: int | None = None) -> None:
        self.step, self.signal_name, self.rank, self.sent = step, signal_name, rank, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class RecordShards(L.Callback):
    """Writes ``<out>/rank<r>.pt``: the training indices of each epoch and the last validation's predictions."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.train: list[torch.Tensor] = []
        self.val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler  # type: ignore[union-attr]
        self.train.append(torch.cat([b[0] if isinstance(b, tuple) else b for b in sampler]))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.val.append((pl_module(batch[0]).argmax(-1).cpu(), batch[1].cpu()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        preds, labels = (torch.cat(t) for t in zip(*self.val, strict=True))
        torch.save({"train": self.train, "preds": preds, "labels": labels}, self.out / f"rank{trainer.global_rank}.pt")


class InterruptTest(L.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does outside fit) when the first test batch starts."""

    def on_test_batch_start(self, *args: Any) -> None:
        raise KeyboardInterrupt


class PoisonRank(L.Callback):
    """On rank ``rank`` only, fills the first weight with NaN before step ``step``: a divergence one rank sees."""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class SignalInValidation(L.Callback):
    """Sends ``signal_name`` to this process during the ``nth`` validation of fit (not counting the sanity check)."""

    def __init__(self, signal_name: str = "SIGTERM", nth: int = 1) -> None:
        self.signal_name, self.nth, self.seen, self.sent = signal_name, nth, 0, False

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.seen += not trainer.sanity_checking

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking and self.seen == self.nth and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class ZeroHead(L.Callback):
    """Zeroes the network's last linear layer when training starts: with ``--model.lr 0`` every later validation then
    scores at chance, below whatever the run reached before."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        head = [m for m in pl_module.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            for tensor in head.parameters():
                tensor.zero_()


class SignalInExport(L.Callback):
    """Sends ``signal_name`` to this process as the export of the best network starts, once training is over (it
    wraps ``report.export.export_net``, which ``ExportBest`` calls)."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        self.signal_name = signal_name

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from cifar_lightning.report import export

        export_net = export.export_net

        def signalled(*args: Any, **kwargs: Any) -> Any:
            os.kill(os.getpid(), getattr(signal, self.signal_name))
            time.sleep(1.0)  # the signal is handled here, or it was ignored and the export goes on
            return export_net(*args, **kwargs)

        export.export_net = signalled
