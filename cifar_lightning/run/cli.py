"""The command line: LightningCLI plus three conveniences, and the only module that reads ``sys.argv``.

1. ``--model NAME`` picks ``configs/NAME.yaml`` (sugar for ``--config``); dotted flags still override it.
2. Without a subcommand, ``train.py`` fits and then tests the best checkpoint (or says there is no test split).
3. Every run gets its own folder ``<default_root_dir>/<model>/<run id>/`` holding ``config.yaml``,
   ``checkpoints/``, ``metrics.csv``, ``results.json`` and, unless ``--wandb false``, the W&B run.
4. ``--ckpt_path last`` resumes the model's most recent run, in its own folder; ``last.ckpt`` is written every epoch,
   every ``--ckpt_every_minutes`` (and ``--ckpt_every_n_steps``), and on SIGINT/SIGTERM (exit status 130/143).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from cifar_lightning.data import sources
from cifar_lightning.data.datamodule import CIFAR10DataModule
from cifar_lightning.data.sources import DataError
from cifar_lightning.internals import SubcommandExit, cli_callbacks, cli_section, cli_trainer
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.progress import DivergedError
from cifar_lightning.report.export import ExportBest, ExportFormats
from cifar_lightning.report.figures import RunFigures
from cifar_lightning.report.predict import PredictionWriter
from cifar_lightning.run import runs
from cifar_lightning.run.budget import TimeBudget, TimeBudgetTooShort
from cifar_lightning.run.checkpoints import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    checkpoint_callbacks,
    read_checkpoint,
)
from cifar_lightning.run.costs import step_cost
from cifar_lightning.run.estimate import CostReport
from cifar_lightning.run.hardware import default_precision, return_freed_memory
from cifar_lightning.run.loggers import WandbOptions, WandbRunSetup, finish_wandb, plain_config, run_loggers
from cifar_lightning.run.recipes import SUBCOMMANDS, expand_model_flag, help_text
from cifar_lightning.run.results import RunSummary
from cifar_lightning.run.resume import Limits, resolve_checkpoint
from cifar_lightning.run.runs import RUN_ID_ENV, new_run_id
from cifar_lightning.run.signals import GracefulStop
from cifar_lightning.run.usage import (
    BriefParser,
    NothingToDo,
    UsageError,
    brief_error,
    out_of_memory_message,
    quiet_console,
    root_dir_problem,
)


class CIFARCLI(SubcommandExit):
    """LightningCLI with a run folder, default callbacks and loggers, and a precision chosen for the hardware."""

    def __init__(self, args: list[str], run: bool) -> None:
        self.fit_and_test = not run
        self.resume_from: str | None = None  # the checkpoint fit resumes from, resolved and checked
        self.evaluated_run: Path | None = None  # the fit run whose checkpoint `test` evaluates
        self.new_run_folder: Path | None = None  # the run folder this command created (not a resumed run's)
        self.exit_code = 0
        super().__init__(
            CIFAR10Classifier,
            CIFAR10DataModule,
            subclass_mode_model=True,
            args=args,
            run=run,
            parser_class=BriefParser,
            parser_kwargs={"description": help_text()},
            trainer_defaults={
                "default_root_dir": "runs",
                "callbacks": [
                    GracefulStop(),
                    CostReport(),
                    RunSummary(),
                    RunFigures(),
                    ExportBest(),
                    PredictionWriter(),
                ],
            },
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        def add(name: str, kind: Any, default: Any, text: str) -> None:
            parser.add_argument(f"--{name}", type=kind, default=default, help=text)

        add("wandb", bool, True, "Log to Weights & Biases (offline without a key).")
        add("wandb_project", str | None, None, "W&B project; default: $WANDB_PROJECT, else cifar-lightning.")
        add("wandb_entity", str | None, None, "W&B entity (team); default: $WANDB_ENTITY.")
        if self.fit_and_test:  # the subcommands define their own ckpt_path
            add("ckpt_path", str | None, None, "Resume fit from this .ckpt, or 'last': the model's newest run's.")
        add("ckpt_every_minutes", float | None, 10.0, "Also save last.ckpt this often.")
        add("ckpt_every_n_steps", int | None, None, "Also save last.ckpt every N steps.")
        add("export", ExportFormats, "all", "After fit, export the best network: .pt2 and .onnx (all), pt2, none.")
        add("time_budget", float | None, None, "Minutes for the whole run; the schedule follows the clock to fit.")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses, then checks a subcommand's ``--ckpt_path`` file: LightningCLI reads its hyperparameters next, and a
        damaged file would end there in a raw traceback."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        seed = cfg.get("seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed < 2**32:
            raise UsageError(f"--seed_everything must be in 0 .. 2**32 - 1 (or true for a random one), got {seed}.")
        ckpt = cfg.get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in ("last", "best", "hpc", "registry") and not str(ckpt).startswith("registry:"):
            try:
                read_checkpoint(Path(ckpt).expanduser())
            except ValueError as err:
                raise UsageError(str(err)) from None

    def _cfg(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        trainer = self._cfg().trainer
        epochs = trainer.max_epochs
        if epochs is not None and epochs != -1 and epochs < 1:
            raise UsageError(f"--trainer.max_epochs must be at least 1 (or -1 for no limit), got {epochs}.")
        budget = self._cfg().get("time_budget")
        if budget is not None and not budget > 0:
            raise UsageError(f"--time_budget is in minutes and must be positive, got {budget}.")
        if trainer.precision is None:
            trainer.precision = default_precision(str(trainer.accelerator))
        if problem := root_dir_problem(Path(trainer.default_root_dir or "runs")):
            raise UsageError(problem)
        for flag in ("check_val_every_n_epoch", "accumulate_grad_batches", "val_check_interval"):
            value = trainer.get(flag)  # Lightning divides by each: 0 would end the run in a ZeroDivisionError
            if value is not None and not isinstance(value, bool) and value <= 0:
                raise UsageError(f"--trainer.{flag} must be positive, got {value}.")

    def instantiate_classes(self) -> None:
        """Builds data, model and Trainer; a bad value for any of them is a usage error, raised before training."""
        try:
            super().instantiate_classes()
        except UsageError:
            raise
        except (ValueError, MisconfigurationException) as err:
            raise UsageError(f"invalid configuration: {brief_error(str(err), [])}") from None

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        try:  # the optimizer's settings are checked against the network now, before a run folder exists
            self.model.make_optimizer()
        except ValueError as err:
            raise UsageError(f"invalid configuration: {err}") from None
        cfg = self._cfg()
        model_name = runs.model_name(self.model)
        root = Path(cfg.trainer.default_root_dir or "runs")
        limits = Limits(cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.get("time_budget"))
        resume = resolve_checkpoint(cfg.get("ckpt_path"), root / model_name, self.model, self.subcommand, limits)
        if resume.ckpt_path is not None and self.subcommand is not None:
            self.config_init[self.subcommand].ckpt_path = resume.ckpt_path  # what LightningCLI passes to fit/test
        self.resume_from, self.evaluated_run = resume.ckpt_path, resume.evaluated_run
        run_id = os.environ.setdefault(RUN_ID_ENV, resume.run_id or new_run_id(root, model_name))
        if not resume.run_id and not (root / model_name / run_id).exists():
            self.new_run_folder = root / model_name / run_id
        callbacks: list[Any] = cli_callbacks(self)
        for callback in self.trainer_defaults["callbacks"]:  # LightningCLI adds these instances to the Trainer's
            if isinstance(callback, RunSummary):
                callback.evaluates = self.evaluated_run
            if isinstance(callback, ExportBest):
                callback.formats = cfg.get("export", "all")
        smoke_test = bool(cfg.trainer.fast_dev_run)  # Lightning logs nothing then; this writes nothing either
        if not smoke_test and cfg.trainer.enable_checkpointing is not False:
            callbacks += checkpoint_callbacks(cfg.get("ckpt_every_minutes"), cfg.get("ckpt_every_n_steps"))
        if cfg.get("time_budget"):
            callbacks.append(TimeBudget(cfg.time_budget, from_process_start=True))
        if not cli_section(self, "trainer", default={}).get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        if cfg.trainer.logger is not False:  # False: the user turned logging off
            kwargs["logger"] = self.loggers(root / model_name / run_id, resume.step, smoke_test)
            if cfg.wandb and not smoke_test:
                callbacks.append(WandbRunSetup())
        trainer_config = {**cli_section(self, "trainer", default={}), **kwargs}
        try:
            trainer = cli_trainer(self, trainer_config, callbacks)
        except (ValueError, MisconfigurationException):
            if self.new_run_folder is not None:
                discard_run_folder(self.new_run_folder)  # no empty run folder left behind
            raise
        resizes = step_cost(self.model, 0.0) != step_cost(self.model, 1.0)  # progressive resizing: two image sizes
        if str(trainer.precision).startswith("32") and isinstance(trainer.accelerator, CPUAccelerator) and resizes:
            return_freed_memory()  # they would fragment glibc's heap past 3 GB in fp32 (hardware.py)
        return trainer

    def loggers(self, run_dir: Path, resume_step: int | None, smoke_test: bool) -> list[Logger]:
        """The run's loggers (``loggers.run_loggers``): W&B unless ``--wandb false``, then the user's own."""
        cfg = self._cfg()
        given = cli_section(self, "trainer", default={}).get("logger")
        user = [] if given in (None, True) else list(given) if isinstance(given, list) else [given]
        wandb = None
        if cfg.wandb and not smoke_test:
            source = sources.find_source(self.datamodule.data_dir) or "download"
            tags = [f"precision:{cfg.trainer.precision}", f"data:{source}", self.subcommand or "fit+test"]
            wandb = WandbOptions(plain_config(cfg.as_dict()), tags, cfg.get("wandb_project"), cfg.get("wandb_entity"))
        return run_loggers(run_dir, resume_step, smoke_test, wandb, user)

    def on_subcommand_exit(self, stop: SystemExit) -> None:  # Lightning ends a run stopped by a signal so
        self.exit_code = stop_code(self.trainer, stop)


def discard_run_folder(folder: Path) -> None:
    """Removes a run folder this command created, and its model's folder if that is left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def stop_code(trainer: Any, stop: SystemExit) -> int:
    """Exit status of a run ended by SystemExit: 130/143 after SIGINT/SIGTERM, else the SystemExit's own code."""
    graceful = GracefulStop.of(trainer) if trainer is not None else None
    if graceful is not None and graceful.signal_name is not None:
        return graceful.exit_code
    return stop.code if isinstance(stop.code, int) else 1


def fit_and_test(cli: CIFARCLI) -> None:
    """The default command: fit, then test the best checkpoint if the data has a test split."""
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    if report := CostReport.of(trainer):  # its time estimate includes the test
        report.test_follows = datamodule.has_test_split()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cli.resume_from)
    except SystemExit as stop:  # Lightning ends a run stopped by a signal with SystemExit
        cli.exit_code = stop_code(trainer, stop)
        return
    finally:
        if graceful := GracefulStop.of(trainer):
            graceful.release()
    if trainer.interrupted:
        cli.exit_code = 1
        return
    if datamodule.has_test_split():
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")  # the val/acc one, not an interval one
        if not best:  # no validation ran (val_split 0, max_steps within an epoch, fast_dev_run): no best to test
            rank_zero_info("No best checkpoint (no validation ran): testing the weights training ended with.")
        try:
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        except SystemExit as stop:  # Ctrl-C during the test: training is done and its results are kept
            cli.exit_code = stop_code(trainer, stop)
    else:
        rank_zero_info(
            f"{datamodule.data_dir} has no test split: reporting validation only "
            f"(val/acc_best = {trainer.callback_metrics.get('val/acc_best', float('nan')):.4f})."
        )


def main(args: list[str] | None = None) -> int:
    """Entry point of ``train.py``; ``args`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    with quiet_console():
        return _main(args)


def _main(args: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    owns_run_id = RUN_ID_ENV not in os.environ  # False in DDP children, which inherit the parent's
    cli, code, discard = None, 1, False
    try:
        argv = expand_model_flag(argv)
        run = bool(argv) and argv[0] in SUBCOMMANDS
        cli = CIFARCLI(argv, run=run)
        if not run:
            fit_and_test(cli)
        code = cli.exit_code
    except (UsageError, DataError, TimeBudgetTooShort) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
        # bad data stops a run before it trained, a too-short budget after one step: leave no trace of either
        discard = isinstance(err, (DataError, TimeBudgetTooShort))
    except (DivergedError, CheckpointWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
    except (MemoryError, RuntimeError) as err:
        message = out_of_memory_message(err, getattr(getattr(cli, "datamodule", None), "batch_size", None))
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
    except NothingToDo as done:
        print(done)
        code = 0
    finally:
        if cli is not None and code in (130, 143) and getattr(cli.trainer, "global_step", 1) == 0:
            discard = True  # stopped before its first step (while decoding, say): nothing worth keeping
        if cli is not None:
            finish_wandb(cli.trainer, code, hint=not discard)
            if discard and cli.new_run_folder is not None and not (cli.new_run_folder / runs.CHECKPOINTS_DIR).exists():
                discard_run_folder(cli.new_run_folder)
        if owns_run_id:  # a second run in the same process gets a folder of its own
            os.environ.pop(RUN_ID_ENV, None)
        _close_process_group()
    return code


def _close_process_group() -> None:
    # Lightning leaves a gloo (CPU) process group open at exit (it closes only NCCL's); its threads, torn down by the
    # interpreter's exit instead, can abort the process ("terminate called without an active exception", exit -6)
    # after a run that already ended, or failed, cleanly.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
