"""The Lightning internals this project leans on, named in one place: where a public hook exists it is used; these
have none (see cli.py and loggers.py). A Lightning release that renames or reshapes one fails here, loudly, instead
of a run misbehaving; pyproject.toml caps Lightning below the next minor release for the same reason."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cifar_lightning.callbacks import classifier

# method -> the parameters this project calls it with
METHODS = {
    (LightningCLI, "_get"): ["self", "config", "key", "default"],  # a subcommand's section of a config
    (LightningCLI, "_parser"): ["self", "subcommand"],  # for its callback_keys
    (LightningCLI, "_instantiate_trainer"): ["self", "config", "callbacks"],  # builds the Trainer from both
    (LightningCLI, "_run_subcommand"): ["self", "subcommand"],  # wrapped to turn a signal's SystemExit into 130/143
    (ExperimentWriter, "_check_log_dir_exists"): ["self"],  # overridden: a resumed run keeps its metrics.csv
}


def test_the_lightning_methods_used_keep_their_signatures() -> None:
    for (cls, name), params in METHODS.items():
        assert hasattr(cls, name), f"Lightning {L.__version__}: {cls.__name__}.{name} is gone (see cli.py/loggers.py)"
        found = list(inspect.signature(getattr(cls, name)).parameters)
        assert found == params, f"Lightning {L.__version__}: {cls.__name__}.{name}{found}, expected {params}"


def test_the_lightning_attributes_used_still_exist(tmp_path: Path) -> None:
    csv_logger = CSVLogger(tmp_path)
    assert hasattr(csv_logger, "_fs") and hasattr(csv_logger, "_experiment")  # RunCSVLogger.experiment
    assert hasattr(WandbLogger(save_dir=str(tmp_path), mode="offline"), "_experiment")  # finish_wandb
    assert "trainer_defaults" in inspect.signature(LightningCLI.__init__).parameters


def test_callbacks_refuse_a_module_without_the_classifier_contract() -> None:
    with pytest.raises(TypeError, match="need a CIFAR10Classifier; got LightningModule"):
        classifier(L.LightningModule())
