"""Where the dashboard finds its data, runs and models: environment variables and `.streamlit` secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from pipeline.catalog import configured_model_dir, find_run, model_choices
from pipeline.config import default_runs_dir
from pipeline.runs import RunFolder

DEMO_DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", "data/demo"))


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


def configured_model() -> Path | None:
    """A run folder or `model.keras` trained elsewhere (`MODEL_PATH` or the secret `model_path`)."""
    return configured_model_dir(os.environ.get("MODEL_PATH") or _secret("model_path"))


def models() -> list[str]:
    """Runs whose model can predict, the configured model first."""
    return model_choices(runs_dir(), configured_model())


def run_folder(run_id: str) -> RunFolder:
    return find_run(runs_dir(), run_id, configured_model())
