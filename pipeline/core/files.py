"""Atomic file writes for run folders, checkpoints and caches alike.

Every writer goes through `atomic_write`: the content is written to a temporary name beside the target,
flushed to disk, then renamed into place, so a reader never sees half a file and a kill leaves either the
old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def temporary_path_for(path: Path) -> Path:
    """A new, unique temporary file beside `path` that keeps its suffix (writers such as `model.save` check it).
    `tempfile.mkstemp` makes the name unique across threads, processes and hosts sharing the folder, so two
    writers of the same file (runs of one sweep on several nodes filling a shared cache) never write into each
    other's temporary file: each renames a whole file into place, and the last one wins."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(descriptor)
    return Path(name)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, flush the file to disk, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write `payload` as indented JSON, whole or not at all."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, default=str).encode())


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Write `frame` as CSV without its index, whole or not at all."""
    write_bytes_atomic(path, frame.to_csv(index=False).encode())


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Save `array` as .npy, whole or not at all."""
    atomic_write(path, lambda tmp: np.save(tmp, array))


def read_json(path: Path) -> dict[str, Any]:
    """The JSON content of `path`."""
    with open(path, encoding="utf-8") as file:
        return json.load(file)
