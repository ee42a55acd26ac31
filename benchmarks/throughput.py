"""Training and evaluation throughput of both default models on this machine's accelerator, and the epoch time
they imply for the standard 45,000/5,000 split.

    python benchmarks/throughput.py [--images 10240] [--accelerator auto]

Each model is the one of ``configs/<model>.yaml`` (lookahead, whitening and TTA as configured), trained for one epoch
on ``--images`` in-memory images under a Trainer with metrics, logging and progress bar on, then evaluated on 5,000
images, once single-view and once with the model's test-time augmentation (a fit validates single-view until its
last epoch). Precision is what ``train.py`` picks. The first epoch is a warm-up; the second one is timed, at full
size (progressive resizing off). The last line is the CNN's projected fit time for its config's epochs: each
training step weighed by its cost in the recipe (``step_cost``: a 20-pixel step counts (20/32)^2 of a full one), one
single-view validation per epoch but the last, which uses TTA.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from overhead import MODEL_CLASSES, REPO, EpochTimer, in_memory_data, load_config

from cifar_lightning.run.costs import average_to_end, step_cost
from cifar_lightning.run.hardware import default_precision

TRAIN, VAL = 45_000, 5_000


def measure(model: str, images: int, accelerator: str) -> dict[str, float]:
    model_args, data_args = load_config(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images + VAL, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (images + VAL,), generator=gen)
    dm = in_memory_data(x, y, val_count=VAL, **data_args)  # `images` training images
    module = MODEL_CLASSES[model](**{**model_args, **({"low_res": None} if "low_res" in model_args else {})})
    recipe = MODEL_CLASSES[model](**model_args)  # only for its step costs
    epochs = yaml.safe_load((REPO / "configs" / f"{model}.yaml").read_text())["trainer"]["max_epochs"]
    timer = EpochTimer()
    precision = default_precision(accelerator)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=2,
            accelerator=accelerator,
            devices=1,
            precision=precision,
            limit_val_batches=0,
            enable_checkpointing=False,
            logger=CSVLogger(tmp),
            callbacks=[timer],
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=dm)
        trainer.limit_val_batches = 1.0
        tta = module.hparams["tta_level"]
        trainer.validate(module, datamodule=dm, verbose=False)  # warm-up
        eval_ips = {}
        for level in (0, tta):
            module.hparams["tta_level"] = level
            start = time.perf_counter()
            trainer.validate(module, datamodule=dm, verbose=False)
            eval_ips[level] = VAL / (time.perf_counter() - start)
    train_ips = images / timer.seconds
    mean_cost = average_to_end(lambda progress: step_cost(recipe, progress), 0.0)
    fit = epochs * TRAIN / train_ips * mean_cost + (epochs - 1) * VAL / eval_ips[0] + VAL / eval_ips[tta]
    print(
        f"{model}: {type(trainer.accelerator).__name__}, {precision}, train {train_ips:8,.0f} img/s, eval "
        f"{eval_ips[0]:8,.0f} img/s single-view, {eval_ips[tta]:8,.0f} img/s at tta_level {tta}; "
        f"{epochs} epochs of 45k+5k (mean step cost {mean_cost:.2f}) {fit:6.1f} s"
    )
    return {"train_ips": train_ips, "fit_seconds": fit, "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_240, help="training images per timed epoch")
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    results = {model: measure(model, args.images, args.accelerator) for model in ("mlp", "cnn")}
    print(f"cnn_{results['cnn']['epochs']}_epochs={results['cnn']['fit_seconds']:.0f}s")


if __name__ == "__main__":
    main()
