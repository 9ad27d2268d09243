"""What every page shares: settings, the sidebar, cached loaders and the labels that say which data and
weights a run used. Streamlit-only glue; all the work is in `pipeline`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pipeline.config import default_runs_dir
from pipeline.data import Dataset, scan_dataset
from pipeline.errors import PipelineError
from pipeline.runs import RunFolder, list_runs, resolve_run_dir

DEMO_DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", "data/demo"))
DISCLAIMER = ("Research tool, not a diagnostic device: its predictions must never guide the care of a patient.")


def _secret(name: str, default: Any = None) -> Any:
    try:
        return st.secrets.get(name, default)
    except (FileNotFoundError, KeyError, st.errors.StreamlitSecretNotFoundError):
        return default


def demo_mode() -> bool:
    """Hosted demo: no training, no free file-system paths."""
    return os.environ.get("DEMO_MODE", "").lower() in ("1", "true", "yes") or bool(_secret("demo_mode", False))


def configured_data_dirs() -> list[str]:
    """Data roots offered in the sidebar: `CNMC_DATA_DIR`, the `.streamlit` secret `data_dirs`, the demo data."""
    roots = [os.environ.get("CNMC_DATA_DIR", ""), *(_secret("data_dirs", []) or []), str(DEMO_DATA_DIR)]
    return list(dict.fromkeys(root for root in roots if root))


def runs_dir() -> Path:
    return default_runs_dir()


def data_dir() -> str:
    return st.session_state.get("data_dir") or configured_data_dirs()[0]


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


def completed_runs() -> list[str]:
    table = runs_table()
    if table.empty:
        return []
    done = table[table["state"] == "completed"]
    return [run_id for run_id in done["run_id"] if RunFolder(runs_dir() / run_id).has_model()]


def run_folder(run_id: str) -> RunFolder:
    """A run of the runs folder by id; ids that would leave the folder are refused."""
    return RunFolder(resolve_run_dir(runs_dir(), run_id))


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def _predictor(run_dir: str, model_mtime: float) -> Any:
    from pipeline.predict import Predictor

    return Predictor.from_run(run_dir)


@st.cache_resource(show_spinner="Preparing explanations…", max_entries=3)
def _explainer(run_dir: str, model_mtime: float) -> Any:
    from pipeline.explain import Explainer

    return Explainer(_predictor(run_dir, model_mtime).model)


def predictor_and_explainer(run_id: str) -> tuple[Any, Any]:
    """The run's model and explainer, built once per model file."""
    folder = run_folder(run_id)
    mtime = folder.model_path.stat().st_mtime if folder.has_model() else 0.0
    return _predictor(str(folder.path), mtime), _explainer(str(folder.path), mtime)


@st.cache_data(show_spinner=False, max_entries=64)
def read_table(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path)


def table(folder: RunFolder, name: str) -> pd.DataFrame | None:
    path = folder.file(name)
    return read_table(str(path), path.stat().st_mtime) if path.is_file() else None


def provenance(config: dict[str, Any]) -> str:
    """One line saying which data and weights a run used."""
    return (f"Data: **{config.get('data_kind', '?')}** ({config.get('data_dir', '?')}) · "
            f"weights: **{config.get('weights_used') or config.get('weights')}** · "
            f"{config.get('backbone')} at {config.get('image_size')} px · split: {config.get('split')}")


def synthetic_warning(config: dict[str, Any]) -> None:
    if str(config.get("data_kind", "")).startswith("synthetic"):
        st.warning("Trained and tested on **synthetic demo data**: these figures say nothing about real cells.",
                   icon="⚠️")
    if str(config.get("weights_used") or "").startswith("none"):
        st.info("This model started from **random weights**, not ImageNet: expect weaker results.", icon="ℹ️")


def sidebar() -> None:
    """Dataset root and current run, shared by all pages."""
    with st.sidebar:
        st.caption("Dataset")
        roots = configured_data_dirs()
        if demo_mode():
            st.session_state["data_dir"] = st.selectbox("Dataset root", roots, key="data_dir_choice")
        else:
            chosen = st.text_input("Dataset root", value=data_dir(),
                                   help="The C-NMC root (holding training_data/) or a folder with all/ and hem/.")
            st.session_state["data_dir"] = chosen.strip()
        runs = completed_runs()
        st.caption("Run")
        if runs:
            current = st.session_state.get("run_id")
            index = runs.index(current) if current in runs else 0
            st.session_state["run_id"] = st.selectbox("Current run", runs, index=index)
        else:
            st.write("No finished run yet.")
        if demo_mode():
            st.info("Hosted demo: training is switched off.", icon="🔒")
        st.caption(DISCLAIMER)


def show_error(error: PipelineError) -> None:
    st.error(str(error), icon="🚫")
