"""A patient's cells together: a folder or a zip of cell images read as one group, and a summary per group (cells,
mean P(ALL) with its interval over cells, the share called ALL, how many failed the input check or did not read)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..core.errors import PipelineError
from ..data.layouts import IMAGE_SUFFIXES
from ..evaluation.evaluate import THRESHOLD

MAX_ZIP_MEMBERS = 5000
MAX_ZIP_BYTES = 1 << 30
"""A zip may hold at most this many images and this many bytes once unpacked (a zip bomb is refused unread)."""
BOOTSTRAP = 2000
SUMMARY_COLUMNS = [
    "group",
    "cells",
    "unreadable",
    "mean_prob_all",
    "low",
    "high",
    "share_called_all",
    "failed_input_check",
]


def zip_images(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every image in a zip, in name order; `PipelineError` for a file that is not a zip,
    or one past `MAX_ZIP_MEMBERS` images or `MAX_ZIP_BYTES` unpacked. Folders, hidden files and other files are
    skipped; member names are only shown, never used as paths."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as error:
        raise PipelineError(f"{name} is not a readable zip archive ({error}).") from error
    with archive:
        members = sorted(
            (
                info
                for info in archive.infolist()
                if not info.is_dir()
                and PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(info.filename).parts)
            ),
            key=lambda info: info.filename,
        )
        if len(members) > MAX_ZIP_MEMBERS:
            raise PipelineError(f"{name} holds {len(members)} images; at most {MAX_ZIP_MEMBERS} are read at once.")
        if sum(info.file_size for info in members) > MAX_ZIP_BYTES:
            raise PipelineError(f"{name} unpacks to more than {MAX_ZIP_BYTES >> 20} MB of images; refused unread.")
        if not members:
            raise PipelineError(f"{name} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
        for info in members:
            try:
                yield info.filename, archive.read(info)
            except (zipfile.BadZipFile, OSError, RuntimeError) as error:
                raise PipelineError(f"{name}: {info.filename} does not unpack ({error}).") from error


def expand(paths: list[Path]) -> list[tuple[str, str]]:
    """(image path, group) for every image the paths name: a file is its own group's member (group: its folder),
    a folder gives every image under it (group: the folder); a zip is expanded by `zip_images`, not here."""
    found = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise PipelineError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
            found.extend((str(image), str(path)) for image in images)
        else:
            found.append((str(path), str(path.parent)))
    return found


def mean_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean over cells (NaN for no cell)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).choice(values, (BOOTSTRAP, len(values))).mean(axis=1)
    return float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def group_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group of a predictions table (columns group, prob_all, error and, for a released model,
    in_distribution): cells read, unreadable, mean P(ALL) and its interval over the cells, the share called ALL
    and how many failed the input check."""
    rows = []
    for group, rows_of in table.groupby("group", sort=False):
        read = rows_of[rows_of["prob_all"].notna()]
        prob = read["prob_all"].to_numpy(float)
        low, high = mean_interval(prob)
        failed = int((~read["in_distribution"].astype(bool)).sum()) if "in_distribution" in read else 0
        rows.append(
            {
                "group": group,
                "cells": len(read),
                "unreadable": int(len(rows_of) - len(read)),
                "mean_prob_all": round(float(prob.mean()), 4) if len(prob) else None,
                "low": round(low, 4) if len(prob) else None,
                "high": round(high, 4) if len(prob) else None,
                "share_called_all": round(float((prob >= THRESHOLD).mean()), 4) if len(prob) else None,
                "failed_input_check": failed,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_lines(summary: pd.DataFrame) -> list[str]:
    """The summary as lines of text."""
    lines = []
    for row in summary.itertuples(index=False):
        if not row.cells:
            lines.append(f"{row.group}: no cell could be read ({row.unreadable} unreadable)")
            continue
        lines.append(
            f"{row.group}: {row.cells} cells, mean P(ALL) {row.mean_prob_all:.3f} (95 % CI over cells "
            f"{row.low:.3f}-{row.high:.3f}), {row.share_called_all:.0%} called ALL, "
            f"{row.failed_input_check} failed the input check, {row.unreadable} unreadable"
        )
    return lines
