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
from pipeline.figures import curves_figure
from pipeline.launch import cancel
from pipeline.runs import ACTIVE_STATES, RunFolder, list_runs, progress_summary, resolve_run_dir

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


CONFIGURED_MODEL = "configured-model"


def configured_model_dir() -> Path | None:
    """A run folder, or the folder of a `model.keras`, trained elsewhere (`MODEL_PATH` or secret `model_path`)."""
    setting = os.environ.get("MODEL_PATH") or _secret("model_path")
    if not setting:
        return None
    path = Path(setting).expanduser()
    folder = path.parent if path.is_file() else path
    return folder if (folder / "model.keras").is_file() else None


def runs_table() -> pd.DataFrame:
    return pd.DataFrame(list_runs(runs_dir()))


def completed_runs() -> list[str]:
    table = runs_table()
    if table.empty or "state" not in table:
        return []
    done = table[table["state"] == "completed"]
    return [run_id for run_id in done["run_id"] if RunFolder(runs_dir() / run_id).has_model()]


def model_choices() -> list[str]:
    """Finished runs, and the configured model first when there is one."""
    return ([CONFIGURED_MODEL] if configured_model_dir() else []) + completed_runs()


def run_folder(run_id: str) -> RunFolder:
    """A run of the runs folder by id (or the configured model); ids that would leave the folder are refused."""
    configured = configured_model_dir()
    if run_id == CONFIGURED_MODEL and configured:
        return RunFolder(configured)
    return RunFolder(resolve_run_dir(runs_dir(), run_id))


def run_config(folder: RunFolder) -> dict[str, Any]:
    """The run's settings; a bare model file trained elsewhere has none."""
    try:
        return folder.config()
    except (OSError, ValueError):
        return {"data_kind": "unknown (model trained elsewhere)", "weights_used": "unknown"}


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
        runs = model_choices()
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


@st.fragment(run_every=2)
def live_progress(allow_cancel: bool = False) -> None:
    """Queued and training runs, refreshed every 2 s: epoch and step progress, time, curves, cancel."""
    runs = runs_table()
    active = runs[runs["state"].isin(ACTIVE_STATES)] if not runs.empty else runs
    if active.empty:
        st.caption("No run is training now.")
        if st.session_state.pop("was_training", False):
            st.rerun(scope="app")  # a run just finished: refresh the run lists everywhere
        return
    st.session_state["was_training"] = True
    for run_id in active["run_id"]:
        folder = run_folder(run_id)
        status = folder.status()
        summary = progress_summary(status)
        st.markdown(f"**{run_id}** · {status.get('state')} · {status.get('phase', '')}")
        st.progress(summary["fraction"], text=f"Epoch {summary['epoch']} of {summary['epochs']}")
        st.progress(min(1.0, summary["within_epoch"]),
                    text=f"Within the epoch or phase: {summary['within_epoch']:.0%}")
        cols = st.columns(3)
        cols[0].metric("Elapsed", _duration(summary["elapsed_s"]))
        cols[1].metric("Remaining (estimate)", _duration(summary["eta_s"]),
                       help="Extrapolated from the time per epoch so far.")
        if allow_cancel and cols[2].button("Cancel", key=f"cancel-{run_id}", type="secondary"):
            st.toast("Cancelling…" if cancel(folder.path) else "That run is no longer running.")
        history = folder.history()
        if not history.empty:
            left, right = st.columns(2)
            left.plotly_chart(curves_figure(history, "accuracy"), width="stretch", key=f"acc-{run_id}")
            right.plotly_chart(curves_figure(history, "loss"), width="stretch", key=f"loss-{run_id}")
