"""Loggers without surprises: W&B offline when there are no credentials and always finished; a resumed run keeps
its metrics.csv and its W&B run."""

from __future__ import annotations

import configparser
import hashlib
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from cifar_lightning.internals import keep_csv_rows, started_experiment
from cifar_lightning.models.layers import count_parameters

PROJECT = "cifar-lightning"


def wandb_base_url() -> str:
    """The W&B server runs go to, found as wandb finds it: ``WANDB_BASE_URL``, else ``base_url`` in the settings
    files that ``wandb login --host`` writes (``./wandb/settings`` over ``$WANDB_CONFIG_DIR/settings``, by default
    ``~/.config/wandb/settings``), else W&B's cloud."""
    if url := os.environ.get("WANDB_BASE_URL"):
        return url
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    settings = configparser.ConfigParser()
    for path in (config_dir / "settings", Path("wandb") / "settings"):  # later files win
        try:
            settings.read(path)
        except configparser.Error:
            continue  # wandb treats an unreadable settings file as empty, too
    return settings.get("default", "base_url", fallback="https://api.wandb.ai")


def has_wandb_credentials() -> bool:
    """An API key in the environment, or in ~/.netrc for the W&B server in use (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(wandb_base_url()).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` that, given ``resume_step``, continues the run folder's metrics.csv instead of replacing it."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self.resume_step is not None:
            keep_csv_rows(self, self.resume_step)
        return super().experiment  # type: ignore[return-value]


def wandb_run_id(run_dir: Path, group: str, name: str) -> str:
    """``<group>-<name>-<hash of the folder's absolute path>``: the same for a folder every time it is resumed, and
    distinct for same-named runs under different roots (W&B refuses an id a live run in this process holds)."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"{group}-{name}-{digest}"


def make_wandb_logger(
    run_dir: Path,
    group: str,
    name: str,
    config: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    project: str | None = None,
    entity: str | None = None,
) -> WandbLogger:
    """A WandbLogger writing into ``run_dir/wandb``; offline unless credentials exist or WANDB_MODE says otherwise.

    ``group`` (the model name) and ``tags`` let the dashboard put runs side by side without manual setup;
    ``config`` (the resolved run config) becomes the W&B run config. The checkpoints (aliases ``best`` and
    ``latest``) are logged as model artifacts after fit, offline too: ``wandb sync`` uploads them. The W&B run id
    comes from the run folder (``wandb_run_id``), with ``resume="allow"``, so a run resumed into the same folder
    logs to the same W&B run. ``project`` and ``entity`` default to W&B's own
    ``WANDB_PROJECT`` and ``WANDB_ENTITY`` (the project to ``cifar-lightning``).
    """
    offline = "WANDB_MODE" not in os.environ and not has_wandb_credentials()
    if offline:
        rank_zero_info(
            "W&B: no credentials found, logging offline (upload later with `wandb sync`, printed at the end)."
        )
    # Offline through wandb's own mode, not WandbLogger(offline=True), which refuses to log model artifacts.
    mode: dict[str, Any] = {"mode": "offline"} if offline else {}
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project or os.environ.get("WANDB_PROJECT") or PROJECT,
        entity=entity or os.environ.get("WANDB_ENTITY"),
        group=group,
        name=f"{group}-{name}",
        id=wandb_run_id(run_dir, group, name),
        resume="allow",
        save_dir=str(run_dir),
        log_model=os.environ.get("WANDB_MODE") != "disabled",
        config=config,
        tags=list(tags),
        **mode,
    )


class WandbOptions(NamedTuple):
    """What a run's W&B logger gets besides its folder: the resolved config, tags, project and entity."""

    config: dict[str, Any]
    tags: Sequence[str]
    project: str | None
    entity: str | None


def run_loggers(
    run_dir: Path, resume_step: int | None, smoke_test: bool, wandb: WandbOptions | None, user: Sequence[Logger]
) -> list[Logger]:
    """The run's CSV logger first (``trainer.log_dir``, where config.yaml, checkpoints/ and results.json go, is its
    folder), then W&B (unless ``wandb`` is None or the user passed a ``WandbLogger``), then the user's loggers."""
    csv_logger = RunCSVLogger(
        run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name, resume_step=resume_step
    )
    if not smoke_test:  # create the folder now, before SaveConfigCallback writes config.yaml into it
        _ = csv_logger.experiment
    loggers: list[Logger] = [csv_logger]
    if wandb is not None and not any(isinstance(logger, WandbLogger) for logger in user):
        loggers.append(make_wandb_logger(run_dir, run_dir.parent.name, run_dir.name, *wandb))
    return [*loggers, *user]


class WandbRunSetup(L.Callback):
    """Rank 0, when fit or test starts: the parameter count into the run config.

    Summaries stay W&B's default, the last value, so they are plain numbers that the end-of-run console summary
    prints (it skips a ``summary="max"`` metric's nested value): ``val/acc`` is the final weights' accuracy, and
    ``val/acc_best``, a running maximum, the best epoch's."""

    @rank_zero_only
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.config.update({"parameters": count_parameters(pl_module)}, allow_val_change=True)


@rank_zero_only
def finish_wandb(trainer: L.Trainer | None, exit_code: int = 0, hint: bool = True) -> None:
    """Closes the W&B run (marked failed for a non-zero ``exit_code``) so the next run in this process starts a new
    one, and, offline and with ``hint``, prints the command that uploads it: every part of it, when the run was
    resumed (each part is its own offline-run folder)."""
    for logger in getattr(trainer, "loggers", []):
        run = started_experiment(logger)
        if not isinstance(logger, WandbLogger) or run is None:
            continue
        offline = run.settings.mode == "offline" if hasattr(run, "settings") else False
        run_path = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the offline-run folder
        run.finish(exit_code=exit_code)
        if offline and hint:
            # wandb names a part offline-run-<time>-<id>, plus -1, -2 ... when two parts start within one second
            parts = sorted(run_path.parent.glob(f"offline-run-*-{run.id}*")) or [run_path]
            rank_zero_info(f"W&B: offline run saved; upload it with: wandb sync {' '.join(map(str, parts))}")


def plain_config(value: Any) -> Any:
    """The resolved config as JSON-ready values (W&B stores the run config as JSON)."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_config(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)
