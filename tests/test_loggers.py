"""Logging as Lightning and W&B users set it up: their own loggers, W&B's environment, a self-hosted W&B server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import flags, read_wandb_run_records, run_dirs, tiny_args

from cifar_lightning.run.cli import main
from cifar_lightning.run.loggers import has_wandb_credentials


@pytest.mark.parametrize(
    ("settings", "env_url", "expected"),
    [
        ("[default]\nbase_url = https://wandb.example.com\n", None, True),  # after `wandb login --host`
        (None, "https://wandb.example.com", True),
        (None, None, False),  # the key is for the self-hosted server, not for W&B's cloud
        ("not an ini file", None, False),
    ],
)
def test_credentials_are_found_for_the_server_in_use(
    settings: str | None, env_url: str | None, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "netrc").write_text("machine wandb.example.com\n  login user\n  password 0123456789abcdef\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    if settings is not None:
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "settings").write_text(settings)
    if env_url:
        monkeypatch.setenv("WANDB_BASE_URL", env_url)
    assert has_wandb_credentials() is expected


@pytest.mark.parametrize(("env", "flag", "expected"), [("from-env", None, "from-env"), ("from-env", "flag", "flag")])
def test_wandb_project_follows_wandb_project_and_the_flag_overrides_it(
    env: str, flag: str | None, expected: str, folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_PROJECT", env)
    monkeypatch.setenv("WANDB_ENTITY", "my-team")
    args = tiny_args(folder_dir, tmp_path, "mlp")
    args[args.index("--wandb") + 1] = "true"
    assert main([*args, *(["--wandb_project", flag] if flag else [])]) == 0
    [run] = run_dirs(tmp_path)
    [wandb_file] = run.glob("wandb/offline-run-*/*.wandb")
    [record] = read_wandb_run_records(wandb_file)
    assert record.project == expected and record.entity == "my-team"


def test_a_users_own_logger_is_added_to_the_runs_loggers(folder_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my_logs"
    args = [
        *tiny_args(folder_dir, tmp_path / "runs", "mlp"),
        *flags({"--trainer.logger": "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir": mine}),
    ]
    assert main(args) == 0
    [run] = run_dirs(tmp_path / "runs")
    assert json.loads((run / "results.json").read_text())["val/acc_best"] is not None  # the run folder is whole
    assert (run / "metrics.csv").is_file() and list(mine.glob("lightning_logs/version_0/metrics.csv"))


def test_checkpointing_and_exports_can_be_turned_off(folder_dir: Path, tmp_path: Path) -> None:
    args = [*tiny_args(folder_dir, tmp_path, "mlp"), "--trainer.enable_checkpointing", "false", "--export", "none"]
    assert main(args) == 0
    [run] = run_dirs(tmp_path)
    assert not (run / "checkpoints").exists() and not list(run.glob("model.*"))
    assert json.loads((run / "results.json").read_text())["test/acc"] is not None  # tested the last weights
