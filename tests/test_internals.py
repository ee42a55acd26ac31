"""The private library internals the project leans on live in ``cifar_lightning/internals.py`` alone, and each still
exists with the shape used: a Lightning, jsonargparse or torch release that renames or reshapes one fails here,
loudly, instead of a run misbehaving."""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cifar_lightning import internals
from cifar_lightning.models.classifier import classifier

PACKAGE = Path(internals.__file__).parent

# method -> the parameters internals.py calls it with
METHODS = {
    (LightningCLI, "_get"): ["self", "config", "key", "default"],
    (LightningCLI, "_parser"): ["self", "subcommand"],
    (LightningCLI, "_instantiate_trainer"): ["self", "config", "callbacks"],
    (LightningCLI, "_run_subcommand"): ["self", "subcommand"],
    (ExperimentWriter, "_check_log_dir_exists"): ["self"],
}


@pytest.mark.parametrize(("owner", "name"), METHODS)
def test_the_private_methods_used_keep_their_signatures(owner: type, name: str) -> None:
    assert hasattr(owner, name), f"Lightning {L.__version__}: {owner.__name__}.{name} is gone (internals.py)"
    found = list(inspect.signature(getattr(owner, name)).parameters)
    assert found == METHODS[owner, name], f"Lightning {L.__version__}: {owner.__name__}.{name}{found}"


def test_the_private_attributes_used_still_exist(tmp_path: Path) -> None:
    csv_logger = CSVLogger(tmp_path)
    assert hasattr(csv_logger, "_fs") and csv_logger._experiment is None  # keep_csv_rows: lazily made writer
    assert WandbLogger(save_dir=str(tmp_path), mode="offline")._experiment is None  # started_experiment
    assert "trainer_defaults" in inspect.signature(LightningCLI.__init__).parameters
    for probe in internals.TORCH_CPU_BF16_PROBES:  # devices.cpu_supports_bf16
        assert callable(getattr(torch.cpu, probe, None)), f"torch {torch.__version__}: torch.cpu.{probe} is gone"


def test_option_strings_reach_the_subcommand_parsers() -> None:
    parser = LightningArgumentParser()
    parser.add_argument("--top")
    subcommands = parser.add_subcommands()
    fit = LightningArgumentParser()
    fit.add_argument("--trainer.max_epochs")
    subcommands.add_subcommand("fit", fit)
    assert {"--top", "--trainer.max_epochs"} <= set(internals.option_strings(parser))


@functools.cache  # parsing the whole package once per checked file took 5 s
def own_private_names() -> frozenset[str]:
    """The private attributes the package's own classes set (``self._name = ...``): not a library's."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and getattr(node.value, "id", "") == "self"
            ):
                names.add(node.attr)
    return frozenset(names)


def private_uses(path: Path) -> list[str]:
    """``x._name`` in ``path`` where ``x`` is not ``self``/``cls``/``super()`` and ``_name`` is not one of the
    package's own attributes: a library's private attribute."""
    found, own = [], own_private_names()
    for node in ast.walk(ast.parse(path.read_text())):
        name = node.attr if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr") and node.args[1:]:
            name = getattr(node.args[1], "value", None)  # getattr(x, "_name")
        if not isinstance(name, str) or not name.startswith("_") or name.startswith("__") or name in own:
            continue
        owner = node.value if isinstance(node, ast.Attribute) else node.args[0]  # type: ignore[attr-defined]
        if getattr(owner, "id", "") in ("self", "cls") or isinstance(owner, ast.Call):
            continue
        found.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}: {name}")
    return found


def test_no_module_but_internals_touches_a_private_attribute() -> None:
    found = [use for path in sorted(PACKAGE.rglob("*.py")) if path.name != "internals.py" for use in private_uses(path)]
    assert not found, f"private attributes outside internals.py: {found}"
    assert private_uses(PACKAGE / "internals.py")  # the check sees them where they are


def test_callbacks_refuse_a_module_without_the_classifier_contract() -> None:
    with pytest.raises(TypeError, match="need a CIFAR10Classifier; got LightningModule"):
        classifier(L.LightningModule())
