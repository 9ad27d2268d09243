"""Ways a run folder's files get damaged (a crash mid-copy, a hand edit, a full disk), drawn by Hypothesis: each
strategy damages one file of a run folder in place and says what it did."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import strategies as st

JSON_FILES = ("config.json", "status.json", "metrics.json")
CSV_FILES = ("history.csv", "split.csv", "predictions.csv")
RUN_FILES = (*JSON_FILES, *CSV_FILES, "model.keras")

BAD_VALUES = st.one_of(
    st.text(max_size=8),
    st.just(float("nan")),
    st.just(float("inf")),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
    st.integers(),
)


def _missing(path: Path) -> None:
    path.unlink()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, share: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])


def _garbage(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _json_value(path: Path, key_index: int, value: Any) -> None:
    """One top-level value of a JSON file replaced by `value` (a text where a number belongs, NaN, a list...)."""
    payload = json.loads(path.read_text())
    key = sorted(payload)[key_index % len(payload)]
    payload[key] = value
    path.write_text(json.dumps(payload))


def _json_not_object(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def _csv_columns(path: Path, drop: int) -> None:
    table = pd.read_csv(path)
    table.drop(columns=table.columns[drop % len(table.columns)]).to_csv(path, index=False)


def _csv_values(path: Path, column: int, value: Any) -> None:
    """Every cell of one column replaced by `value` as a CSV writes it (None: an empty cell)."""
    table = pd.read_csv(path)
    table[table.columns[column % len(table.columns)]] = ["" if value is None else str(value)] * len(table)
    table.to_csv(path, index=False)


@st.composite
def damage(draw: st.DrawFn, files: tuple[str, ...] = RUN_FILES) -> tuple[str, str, Callable[[Path], None]]:
    """(file, kind of damage, how to apply it to that file)."""
    name = draw(st.sampled_from(files))
    kinds = ["missing", "empty", "truncated", "garbage"]
    kinds += ["wrong value", "not an object"] if name in JSON_FILES else []
    kinds += ["a column missing", "wrong values"] if name in CSV_FILES else []
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        act = _missing
    elif kind == "empty":
        act = _empty
    elif kind == "truncated":
        act = partial(_truncated, share=draw(st.floats(0.05, 0.95)))
    elif kind == "garbage":
        act = partial(_garbage, data=draw(st.binary(min_size=1, max_size=64)))
    elif kind == "wrong value":
        act = partial(_json_value, key_index=draw(st.integers(0, 60)), value=draw(BAD_VALUES))
    elif kind == "not an object":
        act = partial(_json_not_object, value=draw(BAD_VALUES))
    elif kind == "a column missing":
        act = partial(_csv_columns, drop=draw(st.integers(0, 10)))
    else:
        act = partial(_csv_values, column=draw(st.integers(0, 10)), value=draw(BAD_VALUES))
    return name, kind, act


def apply(run_dir: Path, drawn: tuple[str, str, Any]) -> str:
    """Damage `run_dir` as drawn; returns a description for failure messages."""
    name, kind, act = drawn
    act(run_dir / name)
    return f"{name}: {kind}"
