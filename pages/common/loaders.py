"""Cached loaders: the dataset of the sidebar, run tables, models and explainers (built once per file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pipeline.data import Dataset, scan_dataset
from pipeline.runs import RunFolder, list_runs

from .settings import data_dir, run_folder, runs_dir


@st.cache_data(show_spinner=False)
def _scan(root: str, signature: float) -> Dataset:
    return scan_dataset(root)


def current_dataset() -> Dataset:
    """The dataset of the sidebar, cached until its folder changes; raises PipelineError when unusable."""
    root = Path(data_dir()).expanduser()
    signature = root.stat().st_mtime if root.exists() else 0.0
    return _scan(str(root), signature)


def runs_table() -> pd.DataFrame:
    return pd.DataFrame(list_runs(runs_dir()))


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def _predictor(run_dir: str, model_mtime: float) -> Any:
    from pipeline.predict import Predictor

    return Predictor.from_run(run_dir)


@st.cache_resource(show_spinner="Preparing explanations…", max_entries=3)
def _explainer(run_dir: str, model_mtime: float) -> Any:
    from pipeline.explain import Explainer

    predictor = _predictor(run_dir, model_mtime)
    return Explainer(predictor.model, forward=predictor.forward)


def predictor_and_explainer(run_id: str) -> tuple[Any, Any]:
    """The run's model and explainer, built once per model file."""
    folder = run_folder(run_id)
    mtime = folder.model_path.stat().st_mtime if folder.has_model() else 0.0
    return _predictor(str(folder.path), mtime), _explainer(str(folder.path), mtime)


@st.cache_data(show_spinner=False, max_entries=64)
def _read_table(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path)


def table(folder: RunFolder, name: str) -> pd.DataFrame | None:
    path = folder.file(name)
    return _read_table(str(path), path.stat().st_mtime) if path.is_file() else None
