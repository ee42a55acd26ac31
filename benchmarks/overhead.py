"""Framework overhead: one training epoch of our LightningModule under a Trainer against a plain PyTorch loop.

    python benchmarks/overhead.py --model cnn [--images 10240] [--repeats 3]
    python benchmarks/overhead.py --model mlp

Both sides train the network of ``configs/<model>.yaml`` with the same batches (the DataModule's loader and its
batched augmentation), the same optimizer, learning-rate schedule, loss and precision (bf16 autocast where the CPU
has native bf16, as ``train.py`` picks). The Lightning side runs everything a user gets: torchmetrics accuracy, every
``self.log`` call, the CSV logger and the progress bar; validation and checkpointing are off on both sides.
Lookahead is off on both sides (it is part of the model, not the framework). Fresh weights for every repeat; the two
sides alternate and the medians of the epoch times are compared. The last line is the headline ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.loggers import CSVLogger

from cifar_lightning import CIFAR10DataModule, CNNClassifier, MLPClassifier
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.optim import schedule_factor
from cifar_lightning.run.hardware import DefaultPrecision, default_precision
from cifar_lightning.run.recipes import recipe_args, recipe_chain

REPO = Path(__file__).resolve().parent.parent
MODEL_CLASSES = {"cnn": CNNClassifier, "mlp": MLPClassifier}


def load_config(model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's model arguments (lookahead off, as the module's docstring says) and its data settings."""
    model_args = {**recipe_args(model), "lookahead": False}
    data_keys = ("batch_size", "crop_padding", "crop_padding_mode", "augment")
    data_args = {k: v for k, v in recipe_args(model, "data").items() if k in data_keys}
    return model_args, data_args


def model_class(model: str) -> type[CIFAR10Classifier]:
    """The class ``configs/<model>.yaml`` (or the recipe it extends) names."""
    named = [(yaml.safe_load(p.read_text()).get("model") or {}).get("class_path") for p in recipe_chain(model)]
    return {c.__name__: c for c in MODEL_CLASSES.values()}[[n for n in named if n][-1].rpartition(".")[2]]


def in_memory_data(images: torch.Tensor, labels: torch.Tensor, val_count: int, **kwargs: Any) -> CIFAR10DataModule:
    """The DataModule over ``images`` (the last ``val_count`` held out for validation): no disk, the same batches for
    every side of a comparison."""
    dm = CIFAR10DataModule.from_tensors(images, labels, val_split=val_count, **kwargs)
    dm.setup("fit")
    return dm


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning_epoch(module: CIFAR10Classifier, dm: CIFAR10DataModule, precision: DefaultPrecision) -> float:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            precision=precision,
            limit_val_batches=0,
            enable_checkpointing=False,
            logger=CSVLogger(tmp),
            callbacks=[timer],
            enable_progress_bar=True,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=dm)
    return timer.seconds


def plain_epoch(module: CIFAR10Classifier, dm: CIFAR10DataModule, precision: DefaultPrecision) -> float:
    """The same work as Lightning's epoch, written out by hand; ``module`` is only used as the network."""
    hp = module.hparams
    opt = module.make_optimizer()
    loader = dm.train_dataloader()  # dm is set up (in_memory_data)
    total = len(loader)
    factor = schedule_factor(hp["warmup_fraction"], hp["schedule"], total_steps=total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    module.train()
    start = time.perf_counter()
    for images, labels in loader:
        x = dm.transform(images, train=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = module(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=hp["label_smoothing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_CLASSES), default="cnn")
    parser.add_argument("--images", type=int, default=None, help="images per epoch (default: 10,240 cnn, 45,000 mlp)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    count = args.images or (10_240 if args.model == "cnn" else 45_000)

    model_args, data_args = load_config(args.model)
    precision = default_precision("cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count + 1, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (count + 1,), generator=gen)
    dm = in_memory_data(images, labels, val_count=1, **data_args)  # `count` training images

    def fresh() -> CIFAR10Classifier:
        torch.manual_seed(0)
        return model_class(args.model)(**model_args)

    plain_epoch(fresh(), dm, precision), lightning_epoch(fresh(), dm, precision)  # warm-up both paths
    times: dict[str, list[float]] = {"plain": [], "lightning": []}
    for _ in range(args.repeats):
        times["plain"].append(plain_epoch(fresh(), dm, precision))
        times["lightning"].append(lightning_epoch(fresh(), dm, precision))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nmodel {args.model}, {count} images/epoch, batch {dm.batch_size}, precision {precision}, "
        f"repeats {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    for name, values in times.items():
        print(
            f"{name:9s} median {med[name]:7.2f} s/epoch ({count / med[name]:8,.0f} img/s)  "
            f"runs: {', '.join(f'{v:.2f}' for v in values)}"
        )
    print(f"overhead={med['lightning'] / med['plain']:.3f}x")


if __name__ == "__main__":
    main()
