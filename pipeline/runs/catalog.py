"""What the dashboard and the command line list and say about runs: the run table, models ready to predict,
the configured model, provenance lines, durations and progress. Plain logic, no Streamlit."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import EMBEDDED_SAMPLE, default_runs_dir
from ..core.errors import PipelineError
from ..data.layouts import cell_name
from ..evaluation.intervals import patient_bootstrap
from ..evaluation.metrics import Metrics, intervals_problem
from .contract import SPLIT, STATES, now_iso, resolve_run_dir
from .crossval import read_summary, summary_path
from .folder import RunFolder
from .record import weights_label

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


def shown_path(path: str | Path | None, hide_paths: bool = False) -> str:
    """A data folder as a page may show it: the full path, or (`hide_paths`, a hosted demo) no server internals:
    the embedded sample as `samples/cnmc-fold1`, any other folder by its name."""
    if not path:
        return "?"
    if not hide_paths:
        return str(path)

    resolved = Path(path).resolve()
    if resolved == EMBEDDED_SAMPLE or EMBEDDED_SAMPLE in resolved.parents:
        return str(resolved.relative_to(EMBEDDED_SAMPLE.parent.parent))
    return resolved.name


def without_paths(text: str) -> str:
    """A message with every absolute path cut to its last part (`/srv/app/runs/x/model.keras` -> `model.keras`)."""
    return re.sub(r"(?<![\w.])/(?:[\w.-]+/)+", "", text)


def without_server_paths(predictions: pd.DataFrame, data_dir: str | None) -> pd.DataFrame:
    """Predictions whose `path` column is relative to the data root (a file outside it keeps only its name)."""
    root = Path(data_dir).resolve() if data_dir else None

    def relative(path: str) -> str:
        resolved = Path(path).resolve()
        if root is not None and root in resolved.parents:
            return str(resolved.relative_to(root))
        return resolved.name

    return predictions.assign(path=predictions["path"].map(relative)) if "path" in predictions else predictions


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Characters with which a spreadsheet reads a cell as a formula (OWASP's CSV injection list)."""


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for a CSV download: every text cell that a spreadsheet would run as a formula is prefixed with a
    single quote (OWASP), so a file named `=HYPERLINK(...)` stays text; numbers are left as they are."""

    def neutral(value: Any) -> Any:
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    text_columns = [
        column
        for column in frame.columns
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column])
    ]
    return frame.assign(**{column: frame[column].map(neutral) for column in text_columns})


def backbone_name(backbone: str | None) -> str:
    """`efficientnet_lite0` -> `EfficientNet-Lite0`, `efficientnet_b3` -> `EfficientNet-B3`."""
    if not backbone or not backbone.startswith("efficientnet_"):
        return str(backbone)
    return "EfficientNet-" + backbone.removeprefix("efficientnet_").capitalize()


def model_name(card: dict[str, Any]) -> str:
    """A model as a visitor would name it (no run id): backbone, input size, weights."""
    weights = str(card.get("weights") or "?")
    source = (
        "ImageNet weights"
        if weights.startswith("imagenet")
        else "random weights"
        if weights.startswith("none")
        else weights.split(" ")[0]
    )
    crossval = card.get("crossval")
    fold = f", fold {crossval['fold']} of {crossval['folds']}" if crossval else ""
    return (
        f"{backbone_name(card.get('backbone'))} at {card.get('image_size')} px, {source} "
        f"(recipe {card['recipe']}{fold})"
    )


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: Any) -> str:
    """`text` as Markdown that shows it verbatim: every ASCII punctuation mark backslash-escaped, so a file name
    such as `**x** :red[y] [link](z)` makes no bold, colour, emoji, link, image, maths or HTML."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))


def provenance(config: dict[str, Any], hide_paths: bool = False, markdown: bool = True) -> str:
    """One line saying which data and weights a run used: Markdown (its values shown verbatim) or plain text."""
    value = escape_markdown if markdown else str
    bold = "**" if markdown else ""
    return (
        f"Data: {bold}{value(config.get('data_kind', '?'))}{bold} "
        f"({value(shown_path(config.get('data_dir'), hide_paths))}) · "
        f"weights: {bold}{value(weights_label(config))}{bold} · "
        f"{value(config.get('backbone'))} at {value(config.get('image_size'))} px · "
        f"split: {value(config.get('split'))}"
    )


def format_duration(seconds: float | None) -> str:
    """`1m 05s`, `2h 03m`; an em dash when unknown."""
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


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
    flags = []
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
        "backbone": config.get("backbone"),
        "image_size": config.get("image_size"),
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


ROLES = {"train": "trained on", "val": "validated on", "test": "held out (test)"}


def example_cells(records: list[Any], split: pd.DataFrame | None, per_class: int = 4) -> list[dict[str, Any]]:
    """Cells to offer as examples, per class half from patients the model never saw (when it has a split) and
    half from its training images, each marked with its role for this model: by path, else by C-NMC cell name
    (the same cell in another folder or format), else by patient (another image of a patient it trained or
    validated on is not new to it)."""

    by_path, by_name, by_patient = {}, {}, {}
    if split is not None:
        for path, subset, patient in zip(split["path"], split["subset"], split["patient"], strict=True):
            role = ROLES.get(subset, subset)
            by_path[str(Path(path).resolve())] = role
            if cell_name(path):
                by_name[cell_name(path)] = role
            if subset in ("train", "val"):
                by_patient.setdefault(str(patient), f"its patient {'trained' if subset == 'train' else 'validated'} on")

    def role_of(record: Any) -> str:
        return (
            by_path.get(str(Path(record.path).resolve()))
            or by_name.get(cell_name(record.path) or "")
            or by_patient.get(str(record.patient))
            or "not in its data"
        )

    chosen = []
    for label in ("ALL", "HEM"):
        cells = sorted((r for r in records if r.label == label), key=lambda r: r.path)
        roles = {r.path: role_of(r) for r in cells}
        unseen = [r for r in cells if roles[r.path] in (ROLES["test"], "not in its data")]
        seen = [r for r in cells if r not in unseen]
        half = per_class // 2
        picked = (_spread(unseen, per_class - min(half, len(seen))) + _spread(seen, half))[:per_class]
        chosen += [{"path": r.path, "label": r.label, "patient": r.patient, "role": roles[r.path]} for r in picked]
    return chosen


def _spread(items: list[Any], count: int) -> list[Any]:
    """`count` items evenly spread over `items` (different patients rather than one patient's first images)."""
    if count <= 0 or not items:
        return []
    positions = sorted({int(i * len(items) / count) for i in range(count)})
    return [items[position] for position in positions]


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
            "backbone": config.get("backbone"),
            "epochs": config.get("epochs"),
            "batch_size": config.get("batch_size"),
            "image_size": config.get("image_size"),
            "split": config.get("split"),
            "mode": "fast (frozen backbone)" if config.get("freeze_backbone") else "full fine-tune",
            "weights": weights_label(config),
            "data": config.get("data_kind"),
            "data_dir": config.get("data_dir"),
            "group": config.get("group", ""),
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
            "warnings": len(metrics.get("warnings") or []),
            "error": error,
        }
    )
    row["state"] = state
    return row


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
