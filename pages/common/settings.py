"""Where the dashboard finds its data, runs and models: environment variables and `.streamlit` secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from pipeline.core.config import EMBEDDED_SAMPLE, default_runs_dir, release_dir
from pipeline.data.layouts import SYNTHETIC_MARKER
from pipeline.runs.catalog import configured_model_dir, find_run, model_choices
from pipeline.runs.display import shown_path
from pipeline.runs.folder import RunFolder

DEMO_DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", "data/demo"))
"""Where the synthetic demo data is generated (one click away in the sidebar)."""


def _secret(name: str, default: Any = None) -> Any:
    try:
        return st.secrets.get(name, default)
    except (FileNotFoundError, KeyError, st.errors.StreamlitSecretNotFoundError):
        return default


def demo_mode() -> bool:
    """Hosted demo: no training, no free file-system paths."""
    return os.environ.get("DEMO_MODE", "").lower() in ("1", "true", "yes") or bool(_secret("demo_mode", False))


def ray_address() -> str | None:
    """A Ray cluster the Train page sends its runs to (`RAY_ADDRESS` or the secret `ray_address`); None: this
    machine, one run after another."""
    return os.environ.get("RAY_ADDRESS") or _secret("ray_address") or None


def model_download_allowed() -> bool:
    """Whether visitors may download model files: always off a hosted demo; on one only where its host says so
    (`ALLOW_MODEL_DOWNLOAD=1` or the secret `allow_model_download`)."""
    allowed = os.environ.get("ALLOW_MODEL_DOWNLOAD", "").lower() in ("1", "true", "yes")
    return not demo_mode() or allowed or bool(_secret("allow_model_download", False))


def synthetic_ready() -> bool:
    """Whether the demo's synthetic data set has been generated."""
    return (DEMO_DATA_DIR / SYNTHETIC_MARKER).is_file()


def configured_data_dirs() -> list[str]:
    """Data roots offered in the sidebar: `CNMC_DATA_DIR`, the `.streamlit` secret `data_dirs`, the embedded real
    sample (the default), and the synthetic demo data once it exists."""
    roots = [
        os.environ.get("CNMC_DATA_DIR", ""),
        *(_secret("data_dirs", []) or []),
        str(EMBEDDED_SAMPLE),
        str(DEMO_DATA_DIR) if synthetic_ready() else "",
    ]
    return list(dict.fromkeys(root for root in roots if root))


def data_label(root: str) -> str:
    """How the sidebar names a data root."""
    if Path(root).resolve() == EMBEDDED_SAMPLE:
        return "real C-NMC sample (441 cells, embedded)"
    if Path(root).resolve() == DEMO_DATA_DIR.resolve():
        return "synthetic demo data"
    return shown_path(root, hide_paths=demo_mode())  # a hosted demo shows no server path


def runs_dir() -> Path:
    """Where this dashboard's run folders live."""
    return default_runs_dir()


def data_dir() -> str:
    """The data set chosen in the sidebar, else the first configured one."""
    return st.session_state.get("data_dir") or configured_data_dirs()[0]


def configured_model() -> Path | None:
    """A run folder or `model.keras` trained elsewhere (`MODEL_PATH` or the secret `model_path`)."""
    return configured_model_dir(os.environ.get("MODEL_PATH") or _secret("model_path"))


def released_model() -> Path | None:
    """The released model's folder (`artifacts/release`, or `$RELEASE_DIR`; empty: none) when it holds a model."""
    folder = release_dir()
    return configured_model_dir(str(folder)) if folder else None


def models() -> list[str]:
    """Runs whose model can predict, the configured model first, then the released model."""
    return model_choices(runs_dir(), configured_model(), released_model())


def run_folder(run_id: str) -> RunFolder:
    """The run folder of `run_id`: a run, the configured model or the release."""
    return find_run(runs_dir(), run_id, configured_model(), released_model())


def current_model() -> str | None:
    """The run chosen in the sidebar, else the first that can predict; None when none can."""
    choices = models()
    chosen = st.session_state.get("run_id")
    return chosen if chosen in choices else (choices[0] if choices else None)
