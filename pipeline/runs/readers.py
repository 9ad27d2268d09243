"""Checked reading of a run's files: a JSON object or a CSV table that names what is wrong with it, files that may
be missing, paths of older runs, and the lock that makes one writer at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from .. import DISPLAY_ORDER
from ..core.config import PROJECT_ROOT
from ..core.errors import PipelineError
from ..core.files import read_json


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (`fcntl.flock`) on `path`, created when missing, for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_object(path: Path, run_id: str) -> dict[str, Any]:
    """A JSON file of the run; a damaged one is a `PipelineError` naming it (a missing one stays
    `FileNotFoundError`)."""
    try:
        payload = read_json(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"{path.name} of run {run_id} does not read ({type(error).__name__}: {error}); the run folder is damaged."
        ) from error
    if not isinstance(payload, dict):
        raise PipelineError(
            f"{path.name} of run {run_id} holds a {type(payload).__name__}, not a JSON object; "
            "the run folder is damaged."
        )
    return payload


def read_table(
    path: Path,
    run_id: str,
    columns: list[str],
    numeric: tuple[str, ...] = (),
    text: tuple[str, ...] = (),
    classes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A CSV of the run with the columns its readers need, `numeric` ones all probabilities, `text` ones all
    filled in and `classes` ones holding only class names; a damaged one is a `PipelineError` naming it (a
    missing one stays `FileNotFoundError`)."""
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(text, str))
    except (OSError, ValueError) as error:
        raise PipelineError(f"{name} of run {run_id} does not read ({error}).") from error
    missing = [column for column in columns if column not in table]
    if missing:
        raise PipelineError(f"{name} of run {run_id} lacks the column(s) {', '.join(missing)}.")
    for column in numeric:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or not values.between(0, 1).all():
            raise PipelineError(f"{name} of run {run_id}: {column} holds values that are not probabilities.")
    for column in text:
        if table[column].isna().any():
            raise PipelineError(f"{name} of run {run_id}: {column} has empty cells.")
    for column in classes:
        if not table[column].isin(DISPLAY_ORDER).all():
            raise PipelineError(f"{name} of run {run_id}: {column} holds other than {' and '.join(DISPLAY_ORDER)}.")
    return table


def readable_objects(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The JSON of each file that reads, by name; a missing or damaged one is left out."""
    found = {}
    for name, path in paths.items():
        try:
            found[name] = read_json(path)
        except (OSError, ValueError):
            continue
    return found


def resolvable(path: str) -> str:
    """A relative path of an older run, absolute: against the working folder, else the project's folder."""
    candidate = Path(path)
    if candidate.is_absolute():
        return path

    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / candidate).exists():
            return str((base / candidate).resolve())
    return str(candidate.resolve())


def resolvable_all(paths: Iterable[str]) -> list[str]:
    """`resolvable` of many paths, each folder looked up once, not each file (a run names thousands of cells in a few
    folders; a file's own name is kept, so a symbolic link to a cell is not followed)."""
    folders: dict[str, str | None] = {}
    resolved = []
    for path in paths:
        if os.path.isabs(path):
            resolved.append(path)
            continue
        parent, name = os.path.split(path)
        if parent not in folders:
            bases = [base / parent for base in (Path.cwd(), PROJECT_ROOT)]
            folders[parent] = next((str(base.resolve()) for base in bases if base.is_dir()), None)
        folder = folders[parent]
        resolved.append(os.path.join(folder, name) if folder is not None else resolvable(path))
    return resolved
