"""One source of truth per recipe: the default configs equal the classes' defaults, and every other config's header
says exactly how it differs from cnn.yaml (what ``train.py`` resolves, class defaults filled in)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from cifar_lightning import CIFAR10DataModule

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIFFERS = "# Differs from cnn.yaml in: "


def defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls).parameters.values()
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in params
        if p.default is not inspect.Parameter.empty
    }


def model_class(config: dict[str, Any]) -> type:
    module, _, name = config["model"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def resolved(name: str) -> dict[str, Any]:
    """The config as dotted keys, with the model's and DataModule's defaults where it sets nothing."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    flat = {"seed_everything": config.get("seed_everything"), "time_budget": config.get("time_budget")}
    flat |= {f"trainer.{k}": v for k, v in (config.get("trainer") or {}).items()}
    flat["model.class_path"] = config["model"]["class_path"]
    flat |= {f"model.{k}": v for k, v in {**defaults(model_class(config)), **config["model"]["init_args"]}.items()}
    flat |= {f"data.{k}": v for k, v in {**defaults(CIFAR10DataModule), **(config.get("data") or {})}.items()}
    return flat


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_the_default_configs_are_the_classes_defaults(name: str) -> None:
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    class_defaults = defaults(model_class(config))
    differing = {
        k: (v, class_defaults.get(k)) for k, v in config["model"]["init_args"].items() if class_defaults.get(k) != v
    }
    assert not differing, f"configs/{name}.yaml and the class defaults disagree (config, class): {differing}"


CNN_FAMILY = sorted(
    p.stem
    for p in CONFIGS.glob("*.yaml")
    if p.stem != "cnn" and yaml.safe_load(p.read_text())["model"]["class_path"].endswith(".CNNClassifier")
)


@pytest.mark.parametrize("name", CNN_FAMILY)
def test_each_config_header_says_how_it_differs_from_cnn_yaml(name: str) -> None:
    header = [line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines() if line.startswith(DIFFERS)]
    assert header, f"configs/{name}.yaml needs a '{DIFFERS}...' line"
    claimed = {key.strip() for key in header[0].removeprefix(DIFFERS).split(",")}
    base, config = resolved("cnn"), resolved(name)
    actual = {key for key in base.keys() | config.keys() if base.get(key) != config.get(key)}
    assert claimed == actual, (
        f"configs/{name}.yaml's header is off: missing {actual - claimed}, wrong {claimed - actual}"
    )
