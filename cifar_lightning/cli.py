"""The command line: LightningCLI plus three conveniences, and the only module that reads ``sys.argv``.

1. ``--model NAME`` picks ``configs/NAME.yaml`` (sugar for ``--config``); dotted flags still override it.
2. Without a subcommand, ``train.py`` fits and then tests the best checkpoint (or says there is no test split).
3. Every run gets its own folder ``<default_root_dir>/<model>/<run id>/`` holding ``config.yaml``,
   ``checkpoints/``, ``metrics.csv``, ``results.json`` and, unless ``--wandb false``, the W&B run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from cifar_lightning import sources
from cifar_lightning.callbacks import ExportBest, RunFigures, RunSummary
from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.loggers import WandbRunSetup, finish_wandb, make_wandb_logger
from cifar_lightning.modules import CIFAR10Classifier, DivergedError
from cifar_lightning.sources import DataError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
RUN_ID_ENV = "CIFAR_LIGHTNING_RUN_ID"  # shared with DDP child processes, which re-run this script


class UsageError(ValueError):
    """A command-line mistake; main() prints the message and exits with status 2."""


def config_dirs() -> list[Path]:
    """Where ``--model NAME`` looks: ./configs first, then the configs/ folder next to this package."""
    return [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]


def available_configs() -> list[str]:
    return sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def expand_model_flag(argv: list[str]) -> list[str]:
    """Replaces ``--model NAME`` with ``--config <dir>/NAME.yaml``, moved first so that later flags override it.

    Values that look like class paths (``cifar_lightning.CNNClassifier``) or inline YAML are left to LightningCLI.
    """
    out, configs, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[1] if arg.startswith("--model=") else argv[i + 1] if arg == "--model" else None
        if name is None or name[:1] in "{[" or "." in name or name[:1].isupper() or i + 1 > len(argv):
            out.append(arg)
            i += 1
            continue
        found = [d / f"{name}.yaml" for d in config_dirs() if (d / f"{name}.yaml").is_file()]
        if not found:
            raise UsageError(
                f"Unknown --model {name!r}. Valid names: {', '.join(available_configs())} (configs/*.yaml)."
            )
        configs += ["--config", str(found[0])]
        i += 1 if "=" in arg else 2
    at = 1 if out and out[0] in SUBCOMMANDS else 0
    return out[:at] + configs + out[at:]


def cpu_supports_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def default_precision(accelerator: str) -> str:
    """bf16-mixed where the hardware runs bf16 natively (recent GPUs, AVX512-BF16/AMX CPUs), else 32-true."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_supports_bf16() else "32-true"
    return "32-true"


def new_run_id(root: Path, model_name: str) -> str:
    """A timestamp, made unique within ``root/model_name``; reused from the environment in DDP child processes."""
    if run_id := os.environ.get(RUN_ID_ENV):
        return run_id
    base = run_id = time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while (root / model_name / run_id).exists():
        run_id, suffix = f"{base}-{suffix}", suffix + 1
    return run_id


class CIFARCLI(LightningCLI):
    """LightningCLI with a run folder, default callbacks and loggers, and a precision chosen for the hardware."""

    def __init__(self, args: list[str], run: bool) -> None:
        self.fit_and_test = not run
        super().__init__(
            CIFAR10Classifier, CIFAR10DataModule, subclass_mode_model=True, args=args, run=run,
            trainer_defaults={"default_root_dir": "runs", "callbacks": [RunSummary(), RunFigures(), ExportBest()]},
            save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
        )  # fmt: skip

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--wandb", type=bool, default=True, help="Log to Weights & Biases (offline without a key).")
        if self.fit_and_test:  # the subcommands define their own ckpt_path
            parser.add_argument("--ckpt_path", type=str | None, default=None, help="Checkpoint to resume fit from.")

    def _cfg(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        trainer = self._cfg().trainer
        epochs = trainer.max_epochs
        if epochs is not None and epochs != -1 and epochs < 1:
            raise UsageError(f"--trainer.max_epochs must be at least 1 (or -1 for no limit), got {epochs}.")
        if trainer.precision is None:
            trainer.precision = default_precision(str(trainer.accelerator))

    def instantiate_classes(self) -> None:
        """Builds data, model and Trainer; a bad value for any of them is a usage error, raised before training."""
        try:
            super().instantiate_classes()
        except UsageError:
            raise
        except (ValueError, MisconfigurationException) as err:
            raise UsageError(f"invalid configuration: {err}") from None

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        cfg = self._cfg()
        model_name = type(self.model).__name__.removesuffix("Classifier").lower()
        root = Path(cfg.trainer.default_root_dir or "runs")
        run_id = os.environ.setdefault(RUN_ID_ENV, new_run_id(root, model_name))
        callbacks: list[Any] = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        callbacks.append(ModelCheckpoint(
            monitor="val/acc", mode="max", save_last=True, auto_insert_metric_name=False,
            filename="epoch={epoch}-step={step}-val_acc={val/acc:.4f}",
        ))  # fmt: skip
        if cfg.trainer.logger is None or cfg.trainer.logger is True:
            # CSVLogger first: trainer.log_dir, where config.yaml, checkpoints/ and results.json go, is its folder.
            csv_logger = CSVLogger(root, name=model_name, version=run_id)
            _ = csv_logger.experiment  # create the folder now, before SaveConfigCallback writes config.yaml into it
            loggers: list[Logger] = [csv_logger]
            if cfg.wandb:
                source = sources.find_source(self.datamodule.data_dir) or "download"
                tags = [f"precision:{cfg.trainer.precision}", f"data:{source}", self.subcommand or "fit+test"]
                run_dir = root / model_name / run_id
                loggers.append(make_wandb_logger(run_dir, model_name, run_id, _plain(cfg.as_dict()), tags))
                callbacks.append(WandbRunSetup())
            kwargs["logger"] = loggers
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        try:
            return self._instantiate_trainer(trainer_config, callbacks)
        except (ValueError, MisconfigurationException):
            shutil.rmtree(root / model_name / run_id, ignore_errors=True)  # no empty run folder left behind
            raise


def _plain(value: Any) -> Any:
    """The resolved config as JSON-ready values (W&B stores the run config as JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def fit_and_test(cli: CIFARCLI) -> None:
    """The default command: fit, then test the best checkpoint if the data has a test split."""
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=datamodule, ckpt_path=cli.config.ckpt_path)
    if trainer.interrupted:
        return
    if datamodule.has_test_split():
        trainer.test(model, datamodule=datamodule, ckpt_path="best")
    else:
        rank_zero_info(
            f"{datamodule.data_dir} has no test split: reporting validation only "
            f"(val/acc_best = {trainer.callback_metrics.get('val/acc_best', float('nan')):.4f})."
        )


def main(args: list[str] | None = None) -> int:
    """Entry point of ``train.py``; ``args`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    owns_run_id = RUN_ID_ENV not in os.environ  # False in DDP children, which inherit the parent's
    cli = None
    try:
        argv = expand_model_flag(argv)
        run = bool(argv) and argv[0] in SUBCOMMANDS
        cli = CIFARCLI(argv, run=run)
        if not run:
            fit_and_test(cli)
    except (UsageError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if cli is not None:
            finish_wandb(cli.trainer)
        if owns_run_id:  # a second run in the same process gets a folder of its own
            os.environ.pop(RUN_ID_ENV, None)
    return 0
