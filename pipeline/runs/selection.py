"""Choosing among runs: ranked by validation figures only, among runs with the same settings, best per grid cell;
the flags that say what a run's figures cannot support."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

SELECTION_METRIC = "val_balanced_accuracy"
SELECTION_TIEBREAK = "val_roc_auc"
SELECTION_LABEL = "validation balanced accuracy"
"""Runs are chosen by this figure of their validation subset (ROC AUC breaks ties), only against comparable runs
(the same data and validation patients), everywhere; the test subset never chooses. Balanced accuracy, not
weighted F1: always answering the majority class (ALL is 2:1 in C-NMC) scores a high weighted F1 and 0.5 here."""

COMPARABLE_SETTINGS = (
    "data_dir",
    "split",
    "seed",
    "val_fraction",
    "test_fraction",
    "folds",
    "cv_folds",
    "cv_fold",
    "validation_from",
    "max_images",
)
"""The settings that decide a run's data and validation patients: runs equal in all of them are comparable."""


def comparable_key(config: dict[str, Any]) -> str:
    """A short key shared by runs on the same data with the same validation patients."""
    import hashlib

    settings = {name: config.get(name) for name in COMPARABLE_SETTINGS}
    if settings["data_dir"]:
        settings["data_dir"] = str(Path(settings["data_dir"]).resolve())
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def rank_by_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs whose validation subset holds both classes, best first within each group of comparable runs
    (groups in the order of their best run). A validation subset of one class (validation from ALL patients
    only) has no ROC AUC and a balanced accuracy that is only ALL's recall: such runs are not ranked."""
    if runs.empty or SELECTION_METRIC not in runs:
        return runs.iloc[0:0]
    done = runs[(runs["state"] == "completed") & runs[SELECTION_METRIC].notna() & runs[SELECTION_TIEBREAK].notna()]
    if "comparable" not in done:
        done = done.assign(comparable="")
    best_of_group = done.groupby("comparable")[SELECTION_METRIC].transform("max")
    return (
        done.assign(_group_best=best_of_group)
        .sort_values(
            ["_group_best", "comparable", SELECTION_METRIC, SELECTION_TIEBREAK, "run_id"],
            ascending=[False, True, False, False, True],
        )
        .drop(columns="_group_best")
    )


def best_run(runs: pd.DataFrame, like: pd.Series | dict[str, Any] | None = None) -> pd.Series | None:
    """The best completed run by validation among the runs comparable with `like` (default: the group of the best
    run overall); its test figures are shown beside, never compared."""
    ranked = rank_by_validation(runs)
    if like is not None and "comparable" in ranked:
        ranked = ranked[ranked["comparable"] == like.get("comparable")]
    return ranked.iloc[0] if not ranked.empty else None


def comparable_count(runs: pd.DataFrame, best: pd.Series) -> int:
    """How many ranked runs the best run was chosen among."""
    ranked = rank_by_validation(runs)
    return int((ranked["comparable"] == best.get("comparable")).sum()) if "comparable" in ranked else len(ranked)


def best_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """For a grid: per (epochs, batch size), the run with the best validation figure."""
    ranked = rank_by_validation(runs)
    return ranked.drop_duplicates(["epochs", "batch_size"], keep="first")


def run_flags(row: pd.Series | dict[str, Any]) -> str:
    """Short flags for listings: patients leaked into test, warnings about what the test subset supports."""
    flags = ["final model: figures out of fold"] if row.get("out_of_fold") is True else []
    support = row.get("test_support")
    if isinstance(support, str) and support:
        flags.append(support)
    leaked = row.get("leaked_patients")
    if leaked is not None and leaked == leaked and leaked > 0:
        flags.append(f"{int(leaked)} patients in train and test")
    val_leaked = row.get("val_leaked_patients")
    if val_leaked is not None and val_leaked == val_leaked and val_leaked > 0:
        flags.append(f"{int(val_leaked)} validation patients also in training")
    warnings = row.get("warnings")
    if warnings is not None and warnings == warnings and warnings > 0:
        flags.append(f"{int(warnings)} warning{'s' * (int(warnings) != 1)}")
    return "; ".join(flags)
