"""Command-line mistakes said briefly: what was not accepted, with the value, and the nearest valid names.

jsonargparse answers a misspelt flag with the whole usage (about 50 lines) and the failed attempt at every member of
a Union (``Expected a <class 'NoneType'>``, ``Given value: Namespace(...)``); a user needs two lines of that.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
from lightning.pytorch.cli import LightningArgumentParser

from cifar_lightning.internals import option_strings

_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes: [",
    "Errors:",
    "Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
    "Problem with given class_path",
)


class UsageError(ValueError):
    """A command-line mistake; main() prints the message and exits with status 2."""


class NothingToDo(Exception):
    """The command asks for work that is already done; main() prints the message and exits with status 0."""


def init_arguments(class_path: str) -> list[str]:
    """The keyword arguments of the class at ``class_path`` and, where its ``__init__`` passes ``**kwargs`` on, its
    bases' (a model's training values are ``CIFAR10Classifier``'s); empty when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is L.LightningModule or klass is object:
            break
        if "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters
            names += [p for p in params if p not in ("self", "args", "kwargs", *names)]
            if "kwargs" not in params:
                break
    return names


def nearest(word: str, names: list[str]) -> str:
    """`` (did you mean: a, b?)`` for the names close to ``word``, else an empty string."""
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def brief_error(message: str, options: list[str]) -> str:
    """``message`` from jsonargparse without its noise, with close matches for a name it did not accept.

    Args:
        message: jsonargparse's error text.
        options: the parser's option strings (``--trainer.max_epochs``, ...), for an unrecognized flag.
    """
    lines = [line.strip().removeprefix("- ") for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE)]
    text = " ".join(kept).replace('Parser key "', 'in "')
    if found := re.search(r"Option '([^']+)' is not accepted", message):
        path = re.search(r"class_path '([\w.]+)'", message)
        text += nearest(found.group(1), init_arguments(path.group(1)) if path else [])
    elif found := re.search(r"unrecognized arguments: (--[\w.-]+)", message, re.IGNORECASE):
        text += nearest(found.group(1).split("=")[0], options)
    return text + " Run train.py --help for every option."


class BriefParser(LightningArgumentParser):
    """LightningCLI's parser, raising ``UsageError`` with ``brief_error``'s text instead of printing the usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives and will catch this
            super().error(message, ex)
        raise UsageError(brief_error(message, option_strings(self)))


# Warnings a run would print that no user can act on: Lightning 2.6 calling a torch API deprecated in 2.14, its model
# summary's note that it sizes bf16 weights as fp32, and its warning that a resumed run's checkpoint folder is not
# empty (it is the run's own folder).
QUIET = (  # regular expressions, matched at the start of the message
    re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
    "Precision bf16-mixed is not supported by the model summary",
    "Checkpoint directory .* exists and is not empty",
    # LightningCLI warns when given `args` while sys.argv has arguments: passing the expanded argv is the point
    "LightningCLI's args parameter is intended",
)


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger" line, printed at every Trainer's start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


@contextmanager
def quiet_console() -> Iterator[None]:
    """For the length of a run: ``QUIET``'s warnings ignored and Lightning's advertisement dropped."""
    advert, lightning_log = _NoAdvert(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message)
        lightning_log.addFilter(advert)
        try:
            yield
        finally:
            lightning_log.removeFilter(advert)


def out_of_memory_message(err: BaseException, batch_size: int | None) -> str | None:
    """What to do, when ``err`` is the machine running out of memory: Python's MemoryError, torch's on a GPU, or the
    CPU allocator's RuntimeError; None for any other error."""
    text = str(err)
    if not isinstance(err, MemoryError | torch.OutOfMemoryError) and not (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        return None
    what = text.splitlines()[0][:160] if text else type(err).__name__
    now = f" (now {batch_size})" if batch_size else ""
    return (
        f"out of memory ({what}). Lower --data.batch_size{now}, or train a smaller model (--model cnn_fast); the "
        "checkpoints written so far are kept (--ckpt_path last resumes)."
    )


def root_dir_problem(root: Path) -> str | None:
    """Why runs cannot be filed under ``root`` (``--trainer.default_root_dir``), or None: it, or a folder above it,
    is a file, or the nearest existing folder cannot be written."""
    existing = next((p for p in (root, *root.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        where = "" if existing == root else f" ({existing} is a file)"
        return f"--trainer.default_root_dir {root} is not a folder{where}: name a folder (it is created if missing)."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--trainer.default_root_dir {root}: {existing} cannot be written. Name a folder you can write to."
    return None
