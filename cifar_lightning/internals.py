"""Every private attribute of Lightning, jsonargparse/argparse and torch this project uses, in one place.

Each is used only where no public hook does the job (the reason is given next to it), and
``tests/test_internals.py`` checks every one against the installed releases, so a release that renames or reshapes
one fails there, loudly, instead of a run misbehaving. ``pyproject.toml`` caps Lightning below its next minor
release for the same reason. Nothing else in the package reads a name that starts with an underscore from a library.
"""

from __future__ import annotations

import csv
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

# torch.cpu's probes for bf16 hardware: public torch only says which kernels it dispatches to, not whether the CPU
# has AVX512-BF16 or AMX (devices.cpu_supports_bf16).
TORCH_CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_bf16_units() -> bool:
    return any(getattr(torch.cpu, name, lambda: False)() for name in TORCH_CPU_BF16_PROBES)


# LightningCLI builds the Trainer in one private method from its config section and callbacks; run.cli builds it
# itself to add run folders, checkpoint intervals, a time budget and loggers between the two.
def cli_section(cli: LightningCLI, key: str, default: Any = None) -> Any:
    """A section (``trainer``, a callback key) of the instantiated config of the running subcommand."""
    return cli._get(cli.config_init, key, default=default)


def cli_callbacks(cli: LightningCLI) -> list[Any]:
    """The callbacks the user's config asks for (``--trainer.callbacks`` and linked ones)."""
    return [cli_section(cli, key) for key in cli._parser(cli.subcommand).callback_keys]


def cli_trainer(cli: LightningCLI, config: dict[str, Any], callbacks: list[Any]) -> Any:
    return cli._instantiate_trainer(config, callbacks)


class SubcommandExit(LightningCLI):
    """LightningCLI whose subcommands (``train.py fit``, ``test``) pass a ``SystemExit`` (how Lightning ends a run
    stopped by a signal) to ``on_subcommand_exit`` instead of ending the process: the run's exit status is decided
    from its own state (130 after Ctrl-C, 143 after SIGTERM)."""

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SystemExit as stop:
            self.on_subcommand_exit(stop)

    def on_subcommand_exit(self, stop: SystemExit) -> None:
        raise stop


# argparse keeps a parser's options and subcommand parsers private; a one-line "did you mean" needs both.
def option_strings(parser: ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its subcommand parsers (``fit``, ``test``...)."""
    subcommands = getattr(parser, "_subcommands_action", None)
    parsers = [parser, *(getattr(subcommands, "_name_parser_map", {}) or {}).values()]
    return [option for p in parsers for option in p._option_string_actions]


class KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv in a private check; this one keeps its rows logged
    before ``resume_step`` (a resumed run logs the steps after its checkpoint again) and appends to them."""

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [row for row in reader if int(row["step"]) < self.resume_step]
            self.metrics_keys = list(reader.fieldnames or [])
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


def keep_csv_rows(logger: CSVLogger, resume_step: int) -> None:
    """Gives ``logger`` a ``KeepingWriter`` unless it already writes (CSVLogger makes its writer lazily, privately)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = KeepingWriter(logger.log_dir, resume_step)


def started_experiment(logger: Logger) -> Any:
    """The logger's experiment (a W&B run) if it was started, else None: the public ``experiment`` would start one."""
    return getattr(logger, "_experiment", None)
