"""Which recipe ``--model NAME`` means: the configs shipped with the package (or in ./configs), and the argv sugar."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from cifar_lightning.run.usage import UsageError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
EXTENDS = "# extends: "  # a config's first line naming the recipe it changes


def config_dirs() -> list[Path]:
    """Where ``--model NAME`` looks: ./configs first, then the configs the package ships (``cifar_lightning/configs``
    in a wheel, the repository's ``configs/`` in a source checkout or editable install)."""
    package = Path(__file__).resolve().parents[1]  # cifar_lightning/, whichever subpackage this module sits in
    return [Path.cwd() / "configs", package / "configs", package.parent / "configs"]


def available_configs() -> list[str]:
    return sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def help_text() -> str:
    """The top of ``train.py --help``: what runs without a subcommand, the subcommands and the config names."""
    return (
        f"Without a subcommand: fit, then test the best checkpoint. Subcommands, each with its own --help: "
        f"{', '.join(SUBCOMMANDS)}. --model NAME reads configs/NAME.yaml ({', '.join(available_configs())}); "
        "dotted flags override it."
    )


def find_config(name: str) -> Path:
    found = [d / f"{name}.yaml" for d in config_dirs() if (d / f"{name}.yaml").is_file()]
    if not found:
        raise UsageError(f"Unknown --model {name!r}. Valid names: {', '.join(available_configs())} (configs/*.yaml).")
    return found[0]


def recipe_chain(name: str) -> list[Path]:
    """The configs ``--model NAME`` loads, base first: a config whose first line is ``# extends: BASE`` lists only
    what differs from BASE, so BASE (and what it extends) is loaded before it."""
    chain: list[Path] = []
    while name:
        path = find_config(name)
        if path in chain:
            raise UsageError(f"configs/{name}.yaml extends itself (through {', '.join(p.stem for p in chain)}).")
        chain.insert(0, path)
        first = path.read_text().partition("\n")[0]
        name = first.removeprefix(EXTENDS).partition(".")[0].strip() if first.startswith(EXTENDS) else ""
    return chain


def recipe_args(name: str, section: Literal["model", "data"] = "model") -> dict[str, Any]:
    """The arguments ``--model NAME`` gives the model class (its ``init_args``) or the DataModule, through the configs
    it extends: ``CNNClassifier(**recipe_args("cnn"))`` and ``CIFAR10DataModule(**recipe_args("cnn", "data"))`` in
    your own code are what ``python train.py --model cnn`` trains (the classes' defaults fill in the rest)."""
    args: dict[str, Any] = {}
    for path in recipe_chain(name):
        part = (yaml.safe_load(path.read_text()) or {}).get(section) or {}
        args |= (part.get("init_args") or {}) if section == "model" else part
    return args


def expand_model_flag(argv: list[str]) -> list[str]:
    """Replaces ``--model NAME`` with ``--config <dir>/NAME.yaml`` (after the configs it extends), moved first so that
    later flags override it.

    Values that look like class paths (``cifar_lightning.CNNClassifier``) or inline YAML are left to LightningCLI.
    """
    out, configs, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--model" and i + 1 == len(argv):
            raise UsageError(f"--model needs a name. Valid names: {', '.join(available_configs())} (configs/*.yaml).")
        name = arg.split("=", 1)[1] if arg.startswith("--model=") else argv[i + 1] if arg == "--model" else None
        if name is None or name[:1] in "{[" or "." in name or name[:1].isupper():
            out.append(arg)
            i += 1
            continue
        for path in recipe_chain(name):
            configs += ["--config", str(path)]
        i += 1 if "=" in arg else 2
    at = 1 if out and out[0] in SUBCOMMANDS else 0
    return out[:at] + configs + out[at:]
