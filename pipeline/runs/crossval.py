"""Patient-level K-fold cross-validation: K runs whose test patients partition the data, summarised as
mean ± standard deviation of every metric. This is the figure to quote: one split's test set is a handful
of patients, and a seed barely changes which."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import TrainConfig, artifacts_dir
from ..core.errors import PipelineError
from ..core.files import read_json, write_json_atomic
from ..evaluation.intervals import patient_bootstrap
from ..evaluation.metrics import Metrics
from .contract import SPLIT, STATES
from .folder import RunFolder

FOLD_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "weighted_f1",
    "macro_f1",
    "roc_auc",
    "sensitivity",
    "specificity",
    "mcc",
    "brier",
    "ece",
    "patient_accuracy",
    "patient_sensitivity",
    "patient_specificity",
)
"""The figures of a fold's test metrics (`metrics.Metrics` names) in its row."""


def crossval_configs(base: TrainConfig, folds: int) -> tuple[str, list[TrainConfig]]:
    """A group name and one config per fold (patient split, fold k tested)."""
    if folds < 2:
        raise PipelineError("Cross-validation needs at least 2 folds.")
    group = f"cv{folds}-{time.strftime('%Y%m%d-%H%M%S')}-s{base.seed}"  # repeats over seeds start in one second
    return group, [base.replace(split="patient", cv_folds=folds, cv_fold=fold) for fold in range(folds)]


def fold_table(folders: list[RunFolder]) -> pd.DataFrame:
    """One row per fold: its run, test patients, images, and each test figure (NaN where undefined)."""
    rows = []
    for position, folder in enumerate(folders):
        try:
            rows.append(_fold_row(folder))
        except (OSError, ValueError) as error:  # a damaged fold is a row that says so, never the end of the table
            rows.append(
                {
                    "fold": position + 1,
                    "run_id": folder.run_id,
                    "state": "broken",
                    "test_patients": "",
                    "test_images": None,
                    **dict.fromkeys([*FOLD_METRICS, "val_weighted_f1"]),
                    "error": str(error),
                }
            )
    columns = ["fold", "run_id", "state", "test_patients", "test_images", *FOLD_METRICS, "val_weighted_f1", "error"]
    return pd.DataFrame(rows, columns=columns).sort_values("fold").reset_index(drop=True)


def _fold_row(folder: RunFolder) -> dict[str, Any]:
    record, metrics = folder.record(), folder.metrics() or {}
    split = folder.split() if folder.file(SPLIT).is_file() else pd.DataFrame(columns=["subset", "patient"])
    test_patients = sorted(split.loc[split["subset"] == "test", "patient"].astype(str).unique())
    fold = record.config.cv_fold if record.config else 0
    state = folder.status().get("state")
    if state not in STATES:
        raise PipelineError(f"status.json of {folder.run_id} holds the state {state!r}.")
    row = {
        "fold": fold + 1,
        "run_id": folder.run_id,
        "state": state,
        "test_patients": " ".join(test_patients),
        "test_images": metrics.get("n"),
        "error": None,
    }
    view = Metrics.of(metrics)
    row.update(view.figures(FOLD_METRICS))
    row["val_weighted_f1"] = view.validation.figure("weighted_f1")
    return row


FOLD_LABELS = {
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC AUC",
    "sensitivity": "sensitivity (ALL)",
    "specificity": "specificity (HEM)",
}


def fold_mean_intervals(table: pd.DataFrame, names: list[str], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Per figure, the interval of the mean over the completed folds (Student's t; needs two folds)."""
    from scipy import stats

    done = table[table["state"] == "completed"]
    intervals = {}
    for name in names:
        values = pd.to_numeric(done[name], errors="coerce").dropna().to_numpy(dtype=float)
        if len(values) > 1:
            half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
            intervals[name] = (float(values.mean() - half), float(values.mean() + half))
    return intervals


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """Mean, sample standard deviation and count of folds with a value, for each figure of the completed folds."""
    done = table[table["state"] == "completed"]
    summary = {}
    for name in [*FOLD_METRICS, "val_weighted_f1"]:
        values = pd.to_numeric(done[name], errors="coerce").dropna().to_numpy(dtype=float)
        summary[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "folds": int(len(values)),
        }
    return {"folds": int(len(table)), "completed": int(len(done)), "metrics": summary}


def summary_lines(summary: dict[str, Any], names: tuple[str, ...] | None = None) -> list[str]:
    """`name  mean ± std  (k folds)` for each figure of `summarize` that has a value (only `names`, if given)."""
    lines = []
    for name, figure in summary["metrics"].items():
        if (names is None or name in names) and figure["mean"] is not None:
            spread = f" ± {figure['std']:.3f}" if figure["std"] is not None else ""
            lines.append(f"{name:22s} {figure['mean']:.3f}{spread}  ({figure['folds']} folds)")
    return lines


def crossval_dir() -> Path:
    """Where cross-validation summaries are written."""
    return artifacts_dir() / "crossval"


def summary_path(group: str) -> Path:
    """Where the summary of the cross-validation `group` is (or will be) written."""
    return crossval_dir() / f"{group}.json"


def read_summary(group: str) -> dict[str, Any]:
    """The summary of `group` as written by `write_summary`; empty while it is not written or when it does not
    read (a damaged summary is written anew when a fold completes)."""
    try:
        summary = read_json(summary_path(group))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def write_summary(group: str, folders: list[RunFolder]) -> Path:
    """`$ARTIFACTS_DIR/crossval/<group>.json`: the per-fold table and the mean ± std of every figure."""
    table = fold_table(folders)
    path = summary_path(group)
    write_json_atomic(
        path,
        {
            "group": group,
            **summarize(table),
            "pooled": pooled_intervals(folders),
            "per_fold": table.replace({np.nan: None}).to_dict(orient="records"),
        },
    )
    return path


def pooled_intervals(folders: list[RunFolder]) -> dict[str, Any] | None:
    """95 % patient-bootstrap intervals of the completed folds' test predictions pooled (every patient is tested
    once, by the fold that held it out); None when no fold has predictions."""

    frames = []
    for folder in folders:
        try:
            if folder.status().get("state") == "completed":
                frames.append(folder.predictions())
        except (OSError, ValueError, PipelineError):
            continue
    return patient_bootstrap(pd.concat(frames, ignore_index=True)) if frames else None


def write_summary_when_complete(folder: RunFolder) -> Path | None:
    """After a fold completes, however it was run (in a sweep, resumed, in another process): the summary of its
    cross-validation when every fold of the group is now completed; None otherwise."""
    config = folder.config()
    group, folds = config.get("group"), config.get("cv_folds")
    if not (group and folds):
        return None
    members = []
    for path in folder.path.parent.iterdir():
        sibling = RunFolder(path)
        try:
            if path.is_dir() and sibling.has_config() and sibling.config().get("group") == group:
                members.append(sibling)
        except (OSError, ValueError):
            continue
    done = [member for member in members if member.status().get("state") == "completed"]
    if len(done) < folds or len(members) != folds:
        return None
    return write_summary(group, sorted(members, key=lambda member: member.config().get("cv_fold", 0)))


def write_summary_of_group(folders: list[RunFolder]) -> Path | None:
    """The summary of `folders` when they are the folds of one cross-validation; None otherwise."""
    try:
        configs = [folder.config() for folder in folders]
    except (OSError, ValueError):
        return None
    groups = {config.get("group") for config in configs}
    if not configs or not all(config.get("cv_folds") for config in configs) or len(groups) != 1:
        return None
    return write_summary(groups.pop(), folders)
