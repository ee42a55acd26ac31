"""Files that are never seen half-written: every file this project writes for later reading (checkpoints, the data
cache, results.json, predictions, exported models) goes through ``atomic_target``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to, renamed over ``path`` when the block succeeds and removed
    when it fails, so a reader (or a run killed mid-write) sees the old file or the new one, never a mix.

    The rename is atomic because it stays within one folder (POSIX and Windows); a copy from the system's temp folder,
    possibly another file system, would not be. The temporary name, ``.<name>.<pid>.tmp``, holds the process id so
    ranks never share one, and ends in ``.tmp`` so a file left by a killed process never passes for a checkpoint;
    ``keep_suffix`` ends it in ``path``'s suffix instead, for writers that check it (``torch.export.save`` warns
    about anything but ``.pt2``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    name = f".{path.stem}.{os.getpid()}.tmp{path.suffix}" if keep_suffix else f".{path.name}.{os.getpid()}.tmp"
    tmp = path.with_name(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
