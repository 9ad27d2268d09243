"""A patient's cells together: a folder or a zip of cell images read as one group, and a summary per group (cells,
mean P(ALL) with its interval over cells, the share called ALL, how many failed the input check or did not read)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..core.errors import PipelineError
from ..data.layouts import IMAGE_SUFFIXES
from ..evaluation.evaluate import THRESHOLD

ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz")

MAX_ZIP_MEMBERS = 5000
MAX_ZIP_BYTES = 1 << 30
"""A zip may hold at most this many images and this many bytes once unpacked (a zip bomb is refused unread)."""
MAX_MEMBER_BYTES = 64 << 20
"""One image of a zip may unpack to at most this many bytes (a C-NMC cell is 0.6 MB as BMP); a larger one is named and
skipped, the rest are read."""
BOOTSTRAP = 2000
SUMMARY_COLUMNS = [
    "group",
    "cells",
    "unreadable",
    "skipped",
    "mean_prob_all",
    "low",
    "high",
    "share_called_all",
    "failed_input_check",
]


@dataclass(frozen=True)
class ZipContents:
    """What a zip gave: its images (member name, bytes), in name order, and every other member with the reason it
    was not read."""

    images: list[tuple[str, bytes]]
    skipped: list[tuple[str, str]]


def _skip_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is not read as an image, or None when it is one to read."""
    path = PurePosixPath(info.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        return "unsafe path (absolute or climbing out of the zip): not read"
    if any(part.startswith((".", "__MACOSX")) for part in path.parts):
        return "hidden or system file"
    if path.suffix.lower() in ARCHIVE_SUFFIXES:
        return "an archive inside the zip: not opened (unpack it and upload its cells)"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image ({path.suffix or 'no suffix'}; images are {', '.join(IMAGE_SUFFIXES)})"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"too large: {info.file_size / 2**20:.0f} MB unpacked, at most {MAX_MEMBER_BYTES >> 20} MB per image"
    return None


def read_zip(data: bytes, name: str) -> ZipContents:
    """The images of a zip and the members it left out, each named with its reason (an unsafe path, an archive
    inside it, a hidden file, not an image, too large, not unpacking). `PipelineError` for a file that is not a zip,
    one past `MAX_ZIP_MEMBERS` images or `MAX_ZIP_BYTES` unpacked, or one with no image to read. Member names are
    only shown, never used as paths."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as error:
        raise PipelineError(f"{name} is not a readable zip archive ({error}).") from error
    with archive:
        entries = sorted((info for info in archive.infolist() if not info.is_dir()), key=lambda info: info.filename)
        reasons = {info.filename: _skip_reason(info) for info in entries}
        members = [info for info in entries if reasons[info.filename] is None]
        skipped = [(info.filename, reasons[info.filename]) for info in entries if reasons[info.filename]]
        if len(members) > MAX_ZIP_MEMBERS:
            raise PipelineError(f"{name} holds {len(members)} images; at most {MAX_ZIP_MEMBERS} are read at once.")
        if sum(info.file_size for info in members) > MAX_ZIP_BYTES:
            raise PipelineError(f"{name} unpacks to more than {MAX_ZIP_BYTES >> 20} MB of images; refused unread.")
        images = []
        for info in members:
            try:
                images.append((info.filename, archive.read(info)))
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
                skipped.append((info.filename, f"does not unpack ({error})"))
    if not images:
        left = f"; left out: {'; '.join(f'{member}: {why}' for member, why in skipped[:5])}" if skipped else ""
        raise PipelineError(f"{name} holds no image to read ({', '.join(IMAGE_SUFFIXES)}){left}.")
    return ZipContents(images, sorted(skipped))


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


LEFT_OUT = "left out of the zip: "
"""How a zip member that was not read is named in a predictions table's `error` (then its reason)."""


def skipped_rows(skipped: list[tuple[str, str]], group: str) -> list[dict[str, object]]:
    """Rows of a predictions table for the members a zip left out: named, with their reason."""
    return [
        {"path": f"{group}:{member}", "group": group, "predicted": None, "prob_all": None, "error": LEFT_OUT + why}
        for member, why in skipped
    ]


def group_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group of a predictions table (columns group, prob_all, error and, for a released model,
    in_distribution): cells read, unreadable, left out of a zip, mean P(ALL) and its interval over the cells, the
    share called ALL and how many failed the input check."""
    rows = []
    for group, rows_of in table.groupby("group", sort=False):
        left_out = int(rows_of["error"].astype(str).str.startswith(LEFT_OUT).sum())
        read = rows_of[rows_of["prob_all"].notna()]
        prob = read["prob_all"].to_numpy(float)
        low, high = mean_interval(prob)
        failed = int((~read["in_distribution"].astype(bool)).sum()) if "in_distribution" in read else 0
        rows.append(
            {
                "group": group,
                "cells": len(read),
                "unreadable": int(len(rows_of) - len(read) - left_out),
                "skipped": left_out,
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
        skipped = f", {row.skipped} left out of the zip (each named with its reason)" if row.skipped else ""
        if not row.cells:
            lines.append(f"{row.group}: no cell could be read ({row.unreadable} unreadable{skipped})")
            continue
        lines.append(
            f"{row.group}: {row.cells} cells, mean P(ALL) {row.mean_prob_all:.3f} (95 % CI over cells "
            f"{row.low:.3f}-{row.high:.3f}), {row.share_called_all:.0%} called ALL, "
            f"{row.failed_input_check} failed the input check, {row.unreadable} unreadable{skipped}"
        )
    return lines
