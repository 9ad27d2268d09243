"""What the dashboard and the command line list and say about runs: the run table, models ready to predict,
the configured model, provenance lines, durations and progress. Plain logic, no Streamlit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import default_runs_dir
from ..core.errors import PipelineError
from ..evaluation.intervals import patient_bootstrap
from ..evaluation.metrics import Metrics, intervals_problem
from ..evaluation.other_subjects import OtherSubjects
from .contract import SPLIT, STATES, now_iso, resolve_run_dir
from .crossval import read_summary, summary_path
from .folder import RunFolder
from .record import backbone_label, image_size_label, weights_label
from .selection import comparable_key

CONFIGURED_MODEL = "configured-model"
"""The id under which a model trained elsewhere (`MODEL_PATH`) is listed."""
RELEASED_MODEL = "released-model"
"""The id under which the released model (`artifacts/release`) is listed."""


def configured_model_dir(setting: str | None) -> Path | None:
    """The folder of a run folder or `model.keras` named by `setting`, when it holds a model file."""
    if not setting:
        return None
    path = Path(setting).expanduser()
    folder = RunFolder(path.parent if path.is_file() else path)
    return folder.path if folder.has_model() else None


def completed_runs(runs_dir: Path) -> list[str]:
    """Ids of the completed runs that have a model, newest first, except that the folds of one cross-validation
    stay together in fold order at the place of its newest (so a demo model, the first fold of its
    cross-validation, serves before the later folds that finish after it)."""
    done = [
        run
        for run in list_runs(runs_dir)
        if run.get("state") == "completed" and RunFolder(Path(run["path"])).has_model()
    ]
    place: dict[str, int] = {}
    keys = [
        (place.setdefault(run.get("group"), position), int(run["cv"].split("/")[0])) if run.get("cv") else (position, 0)
        for position, run in enumerate(done)
    ]
    return [run["run_id"] for _, run in sorted(zip(keys, done, strict=True), key=lambda pair: pair[0])]


def model_choices(runs_dir: Path, configured: Path | None, released: Path | None = None) -> list[str]:
    """Finished runs, after the configured model and the released model when there are."""
    return (
        ([CONFIGURED_MODEL] if configured else []) + ([RELEASED_MODEL] if released else []) + completed_runs(runs_dir)
    )


def find_run(runs_dir: Path, run_id: str, configured: Path | None = None, released: Path | None = None) -> RunFolder:
    """A run of the runs folder by id (or the configured or released model); ids that would leave the folder are
    refused."""
    if run_id == CONFIGURED_MODEL and configured:
        return RunFolder(configured)
    if run_id == RELEASED_MODEL and released:
        return RunFolder(released)
    return RunFolder(resolve_run_dir(runs_dir, run_id))


def released_row(released: Path | None) -> list[dict[str, Any]]:
    """The released model as a row of the run table (none when there is no release)."""
    return [] if released is None else [{**run_row(RunFolder(released)), "run_id": RELEASED_MODEL}]


def run_config(folder: RunFolder) -> dict[str, Any]:
    """The run's settings as a dict: its `RunRecord`'s (a bare `model.keras` was trained elsewhere; a config that
    exists but does not read, or holds a setting of the wrong type, is a `PipelineError`)."""
    return folder.record().settings


def model_card(folder: RunFolder) -> dict[str, Any]:
    """What a model is, for the people using it: data, patients held out, weights, figures on held-out patients,
    warnings and the time its training took."""
    config, metrics = run_config(folder), folder.metrics() or {}
    status = folder.status() if folder.has_status() else {}  # a model trained elsewhere has no status
    card: dict[str, Any] = {
        "run_id": folder.run_id,
        "data": config.get("data_kind"),
        "data_dir": config.get("data_dir"),
        "weights": weights_label(config),
        "backbone": backbone_label(config),
        "image_size": image_size_label(config),
        "split": config.get("split"),
        "tta": config.get("tta", False),
        "recipe": config.get("recipe") or "custom",
        "device": config.get("device") or {},
        "state": status.get("state"),
        "held_out": {},
        "test": {},
        "warnings": metrics.get("warnings") or [],
        "model_warnings": metrics.get("model_warnings") or [],
    }
    if folder.file(SPLIT).is_file():
        split = folder.split()
        for subset in ("val", "test"):
            card["held_out"][subset] = sorted(split.loc[split["subset"] == subset, "patient"].astype(str).unique())
        card["trained_on"] = int((split["subset"] == "train").sum())
    if metrics:
        card["test"] = {
            "images": metrics.get("n"),
            **Metrics.of(metrics).figures(("balanced_accuracy", "roc_auc", "accuracy", "sensitivity", "specificity")),
        }
        card["intervals"] = intervals_of_test(metrics, folder.predictions)
        card["out_of_fold"] = metrics.get("out_of_fold")  # a final model: figures of its folds, not of itself
        card["scored_on"] = Metrics.of(metrics).scored_on
        card["other_subjects"] = metrics.get("other_subjects")  # the other-subject check, when it was run
    card["duration_s"] = _seconds_between(status.get("started_at"), status.get("ended_at"))
    card["crossval"] = crossval_of(config)
    return card


def crossval_summary_path(config: dict[str, Any]) -> Path | None:
    """Where the summary of the cross-validation a run belongs to is (or will be); None for any other run."""
    group = config.get("group")
    return summary_path(group) if group and config.get("cv_folds") else None


def crossval_of(config: dict[str, Any]) -> dict[str, Any] | None:
    """For a fold of a cross-validation: which fold, and once every fold is done, the pooled out-of-fold figures
    of its group with their intervals (every patient of the data held out once); None for any other run."""
    path = crossval_summary_path(config)
    if path is None:
        return None
    folds = config["cv_folds"]
    found = {"fold": int(config.get("cv_fold", 0)) + 1, "folds": int(folds), "pooled": None}
    summary = read_summary(config["group"])
    pooled = summary.get("pooled")
    if summary.get("completed") == folds and pooled and not intervals_problem(pooled):
        found["pooled"] = pooled
        found["patients"] = max(int(figure.get("patients") or 0) for figure in pooled.values())
    return found


def intervals_of_test(metrics: dict[str, Any], predictions: Callable[[], pd.DataFrame | None]) -> dict[str, Any] | None:
    """A run's stored test intervals; for a run from before they were stored, the patient bootstrap of its saved
    test predictions (`predictions()` is asked only then)."""
    if metrics.get("intervals"):
        return metrics["intervals"]

    try:
        table = predictions()
        return patient_bootstrap(table) if table is not None and len(table) else None
    except (OSError, ValueError, KeyError, PipelineError):
        return None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time of a status to another; None when either is missing."""
    if not (start and end):
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# -- run listings ---------------------------------------------------------------------------
def list_runs(runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Summaries of every run under `runs_dir`, newest first."""

    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    folders = [RunFolder(path) for path in runs_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
    return [
        run_row(folder)
        for folder in sorted(folders, key=lambda folder: folder.run_id, reverse=True)
        if folder.exists() or any(folder.path.iterdir())
    ]


def run_row(folder: RunFolder) -> dict[str, Any]:
    """One row for run listings: settings, validation and test figures, leakage and warnings. A folder
    with missing or corrupt files, or a completed run that lacks what it must hold, is shown as broken."""
    row: dict[str, Any] = {"run_id": folder.run_id, "path": str(folder.path), "group": "", "cv": ""}
    if folder.has_status() and not folder.has_config():
        return {**row, "state": "broken", "error": "Its settings (config.json) are missing."}
    try:
        config = folder.record().settings
        status = folder.status()
        metrics = folder.metrics() or {}
    except (OSError, ValueError) as error:  # PipelineError included: a damaged file says which
        return {**row, "state": "broken", "error": f"Unreadable run folder: {error}"}
    state, error = status.get("state", "unknown"), status.get("error")
    if state not in STATES:
        state, error = "broken", f"status.json holds the state {state!r}, which is none of {', '.join(STATES)}."
    if state == "completed":
        problem = folder.completeness_problem()
        if problem:
            state, error = "broken", problem
    validation = metrics.get("validation") or {}
    row.update(
        {
            "epoch": status.get("epoch"),
            "created": config.get("created"),
            "backbone": backbone_label(config),
            "epochs": config.get("epochs"),
            "batch_size": config.get("batch_size"),
            "image_size": config.get("image_size"),
            "split": config.get("split"),
            "mode": "fast (frozen backbone)" if config.get("freeze_backbone") else "full fine-tune",
            "weights": weights_label(config),
            "data": config.get("data_kind"),
            "data_dir": config.get("data_dir"),
            "group": config.get("group", ""),
            "oof_group": config.get("oof_group", ""),
            "cv": f"{config['cv_fold'] + 1}/{config['cv_folds']}" if config.get("cv_folds") else "",
            "comparable": comparable_key(config),
            "val_leaked_patients": (metrics.get("leakage") or {}).get("train_val_patients"),
            "val_weighted_f1": Metrics.of(validation).figure("weighted_f1"),
            "val_balanced_accuracy": validation.get("balanced_accuracy"),
            "val_roc_auc": validation.get("roc_auc"),
            "test_accuracy": metrics.get("accuracy"),
            "weighted_f1": Metrics.of(metrics).figure("weighted_f1"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "mcc": metrics.get("mcc"),
            "roc_auc": metrics.get("roc_auc"),
            "leaked_patients": (metrics.get("leakage") or {}).get("train_test_patients"),
            "test_support": test_support((metrics.get("subsets") or {}).get("test")),
            "out_of_fold": Metrics.of(metrics).out_of_fold,
            **_check_figures(metrics),
            "warnings": len(metrics.get("warnings") or []),
            "error": error,
        }
    )
    row["state"] = state
    return row


def _check_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The other-subject check's ROC AUC and healthy cells called ALL ("k of n"), None without a check."""
    check = OtherSubjects.of(metrics)
    if check is None:
        return {"check_roc_auc": None, "check_healthy_called_all": None}
    called, healthy = check.healthy
    return {"check_roc_auc": check.figure("roc_auc"), "check_healthy_called_all": f"{called} of {healthy}"}


def test_support(test: dict[str, Any] | None) -> str:
    """What a test subset cannot support, in a few words: one class only, or few patients of a class."""
    if not test:
        return ""
    absent = [label for label, count in test["per_class"].items() if not count]
    if absent:
        return f"test has no {'/'.join(absent)}"
    few = [f"{count} {label}" for label, count in test["patients"].items() if 0 < count < 3]
    return f"test has only {' and '.join(few)} patient(s)" if few else ""


def progress_summary(status: dict[str, Any]) -> dict[str, Any]:
    """Overall fraction done, elapsed and estimated remaining seconds of a run, from its status."""
    epochs = max(1, int(status.get("epochs") or 1))
    epoch = int(status.get("epoch") or 0)
    within = float(status.get("progress") or 0.0)
    training = str(status.get("phase", "")).startswith(("training", "fine-tuning"))
    done_epochs = (epoch - 1 + within) if training and epoch else float(status.get("epochs_done") or 0)
    fraction = min(1.0, max(0.0, done_epochs / epochs))
    elapsed = _seconds_between(status.get("started_at"), status.get("ended_at") or now_iso())
    eta = elapsed * (1 - fraction) / fraction if elapsed and fraction > 0.02 and training else None
    return {
        "fraction": fraction,
        "elapsed_s": elapsed,
        "eta_s": eta,
        "epoch": epoch,
        "epochs": epochs,
        "within_epoch": within,
    }
