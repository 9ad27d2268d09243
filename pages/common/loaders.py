"""Cached loaders: the dataset of the sidebar, run tables, models and explainers (built once per file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pipeline.catalog import list_runs
from pipeline.data import Dataset, scan_dataset
from pipeline.runs import RunFolder

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


def _keep_keras_session() -> None:
    """Streamlit calls `keras.backend.clear_session()` before every script run (for apps that build models per
    run). That also empties TensorFlow's eager kernel cache, so every visitor's first model call re-instantiates
    the compiled functions: about 1 s of CPU per page for EfficientNet-B3 (measured). The dashboard keeps its
    models across runs in `st.cache_resource` and never needs that reset, so it is switched off here."""
    import keras

    keras.backend.clear_session = lambda *args, **kwargs: None


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def _predictor(run_dir: str, model_mtime: float) -> Any:
    from pipeline.predict import Predictor

    _keep_keras_session()
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


def mtime(path: Path) -> float:
    """A file's modification time (0 when absent): the key that renews a cached reading of it."""
    return path.stat().st_mtime if path.is_file() else 0.0


@st.cache_data(show_spinner=False, max_entries=16)
def model_card_of(run_dir: str, metrics_mtime: float) -> dict[str, Any]:
    from pipeline.catalog import model_card

    return model_card(RunFolder(Path(run_dir)))
