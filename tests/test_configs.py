"""Each recipe is written once: a config lists only what differs from the class defaults or from the recipe it
extends (``# extends: NAME``), and says what it is and what it measured in at most three header lines."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from cifar_lightning import CIFAR10Classifier, CIFAR10DataModule
from cifar_lightning.run.recipes import EXTENDS, available_configs, find_config, recipe_args, recipe_chain

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults ``cls`` is built with, its bases' included (a model passes the rest on by keyword)."""
    found: dict[str, Any] = {}
    for klass in reversed([c for c in cls.__mro__ if c is not object and "__init__" in vars(c)]):
        for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
            if p.default is not inspect.Parameter.empty:
                found[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return found


def model_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """A config as dotted keys (``model.lr``, ``data.batch_size``, ``time_budget``)."""
    out = {k: v for k, v in config.items() if k not in ("trainer", "model", "data")}
    out |= {f"trainer.{k}": v for k, v in (config.get("trainer") or {}).items()}
    out |= {f"data.{k}": v for k, v in (config.get("data") or {}).items()}
    model = config.get("model") or {}
    out |= {f"model.{k}": v for k, v in (model.get("init_args") or {}).items()}
    if "class_path" in model:
        out["model.class_path"] = model["class_path"]
    return out


def resolved(chain: list[Path]) -> dict[str, Any]:
    """What the configs in ``chain`` set, later ones winning, over the model's and DataModule's defaults."""
    configs: dict[str, Any] = {}
    for path in chain:
        configs |= flat(yaml.safe_load(path.read_text()))
    out = {f"data.{k}": v for k, v in defaults(CIFAR10DataModule).items()}
    if "model.class_path" in configs:
        out |= {f"model.{k}": v for k, v in defaults(model_class(configs["model.class_path"])).items()}
    return out | configs


@pytest.mark.parametrize("name", NAMES)
def test_a_config_sets_only_what_differs_from_the_defaults_or_its_base(name: str) -> None:
    chain = recipe_chain(name)
    before = resolved(chain[:-1])
    own = flat(yaml.safe_load(chain[-1].read_text()))
    if own.get("model.class_path", before.get("model.class_path")) != before.get("model.class_path"):
        # a config naming another class than its base's (or with no base) is judged against that class's defaults
        before |= {f"model.{k}": v for k, v in defaults(model_class(own["model.class_path"])).items()}
    unset = object()
    repeated = {k: v for k, v in own.items() if k != "model.class_path" and before.get(k, unset) == v}
    assert not repeated, f"configs/{name}.yaml repeats values it would get anyway: {repeated}"


@pytest.mark.parametrize("name", NAMES)
def test_a_config_header_says_what_it_is_in_three_lines(name: str) -> None:
    lines = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert 1 <= len(header) <= 3, f"configs/{name}.yaml: {len(header)} header lines"
    if header[0].startswith(EXTENDS):
        assert header[0].removeprefix(EXTENDS).partition(".")[0].strip() in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_recipe_args_build_in_python_the_model_and_data_a_recipe_trains(name: str) -> None:
    """``CNNClassifier(**recipe_args("cnn"))`` in your own code is the model ``--model cnn`` trains: every argument
    the resolved configs give it, and the DataModule's likewise."""
    config = resolved(recipe_chain(name))
    model = model_class(config["model.class_path"])(**recipe_args(name))
    expected = {k[6:]: v for k, v in config.items() if k.startswith("model.") and k != "model.class_path"}
    got = {k: list(v) if isinstance(v, tuple) else v for k, v in model.hparams.items()}
    assert got == expected
    data = {k.removeprefix("data."): v for k, v in config.items() if k.startswith("data.")}
    assert recipe_args(name, "data").items() <= data.items()
    assert isinstance(model, CIFAR10Classifier) and CIFAR10DataModule(**recipe_args(name, "data"))


def test_an_extended_recipe_resolves_through_its_base() -> None:
    assert [p.stem for p in recipe_chain("cnn_long")] == ["cnn", "speedrun", "cnn_long"]
    config = resolved(recipe_chain("cnn_long"))
    assert config["model.widths"] == [128, 512, 512] and config["model.optimizer"] == "sgd"  # own, speedrun's
    assert config["data.crop_padding"] == 2 and config["model.label_smoothing"] == 0.2  # cnn.yaml's, the class's


def test_model_names_resolve_from_any_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model NAME` finds the shipped recipes outside the checkout too (a source or editable install; the wheel
    case is test_packaging's), and a ./configs folder of the user's own wins."""
    monkeypatch.chdir(tmp_path)
    assert set(available_configs()) == set(NAMES)
    assert find_config("cnn") == CONFIGS / "cnn.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cnn.yaml").write_text("model:\n  init_args:\n    lr: 0.5\n")
    assert find_config("cnn") == tmp_path / "configs" / "cnn.yaml"
