"""What the dashboard lists and says about runs: models ready to predict, the configured model, provenance
lines and durations. Plain logic, no Streamlit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .errors import PipelineError
from .runs import RunFolder, list_runs, resolve_run_dir

CONFIGURED_MODEL = "configured-model"
"""The id under which a model trained elsewhere (`MODEL_PATH`) is listed."""

TRAINED_ELSEWHERE = {"data_kind": "unknown (model trained elsewhere)", "weights_used": "unknown"}


def configured_model_dir(setting: str | None) -> Path | None:
    """The folder of a run folder or `model.keras` named by `setting`, when it holds a model file."""
    if not setting:
        return None
    path = Path(setting).expanduser()
    folder = RunFolder(path.parent if path.is_file() else path)
    return folder.path if folder.has_model() else None


def completed_runs(runs_dir: Path) -> list[str]:
    """Ids of the completed runs that have a model, newest first."""
    return [run["run_id"] for run in list_runs(runs_dir)
            if run.get("state") == "completed" and RunFolder(Path(run["path"])).has_model()]


def model_choices(runs_dir: Path, configured: Path | None) -> list[str]:
    """Finished runs, and the configured model first when there is one."""
    return ([CONFIGURED_MODEL] if configured else []) + completed_runs(runs_dir)


def find_run(runs_dir: Path, run_id: str, configured: Path | None = None) -> RunFolder:
    """A run of the runs folder by id (or the configured model); ids that would leave the folder are refused."""
    if run_id == CONFIGURED_MODEL and configured:
        return RunFolder(configured)
    return RunFolder(resolve_run_dir(runs_dir, run_id))


def run_config(folder: RunFolder) -> dict[str, Any]:
    """The run's settings. A bare `model.keras` (no config) was trained elsewhere; a config that exists but
    does not read is an error, never mistaken for a model from elsewhere."""
    if not folder.has_config():
        return dict(TRAINED_ELSEWHERE)
    try:
        return folder.config()
    except (OSError, ValueError) as error:
        raise PipelineError(f"The settings of {folder.run_id} (config.json) do not read: {error}") from error


def provenance(config: dict[str, Any]) -> str:
    """One line (Markdown) saying which data and weights a run used."""
    return (f"Data: **{config.get('data_kind', '?')}** ({config.get('data_dir', '?')}) · "
            f"weights: **{config.get('weights_used') or config.get('weights')}** · "
            f"{config.get('backbone')} at {config.get('image_size')} px · split: {config.get('split')}")


def format_duration(seconds: float | None) -> str:
    """`1m 05s`, `2h 03m`; an em dash when unknown."""
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


SELECTION_METRIC = "val_weighted_f1"
SELECTION_LABEL = "validation weighted F1"
"""Runs are chosen by this figure of their validation subset, everywhere; the test subset never chooses."""


def rank_by_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with a validation figure, best first."""
    if runs.empty or SELECTION_METRIC not in runs:
        return runs.iloc[0:0]
    done = runs[(runs["state"] == "completed") & runs[SELECTION_METRIC].notna()]
    return done.sort_values([SELECTION_METRIC, "run_id"], ascending=[False, True])


def best_run(runs: pd.DataFrame) -> pd.Series | None:
    """The completed run with the best validation figure (its test figures are shown beside, never compared)."""
    ranked = rank_by_validation(runs)
    return ranked.iloc[0] if not ranked.empty else None


def best_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """For a grid: per (epochs, batch size), the run with the best validation figure."""
    ranked = rank_by_validation(runs)
    return ranked.drop_duplicates(["epochs", "batch_size"], keep="first")


def run_flags(row: pd.Series | dict[str, Any]) -> str:
    """Short flags for listings: patients leaked into test, warnings about what the test subset supports."""
    flags = []
    leaked = row.get("leaked_patients")
    if leaked is not None and leaked == leaked and leaked > 0:
        flags.append(f"{int(leaked)} patients in train and test")
    warnings = row.get("warnings")
    if warnings is not None and warnings == warnings and warnings > 0:
        flags.append(f"{int(warnings)} warning{'s' * (int(warnings) != 1)}")
    return "; ".join(flags)
