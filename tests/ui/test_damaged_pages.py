"""Every page survives a damaged run folder beside a healthy one: no exception, and the damaged run is named as
broken with its reason on Results (Hypothesis draws the file and the damage; the run is a real tiny run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
from hypothesis import HealthCheck, given, settings
from streamlit.testing.v1 import AppTest

from pipeline.runs.catalog import list_runs
from tests import damage

pytestmark = pytest.mark.slow  # Predict loads the tiny run's model with TensorFlow

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
PAGES = ("pages/home.py", "pages/dataset.py", "pages/train.py", "pages/results.py", "pages/predict.py")
DAMAGED = "zz-damaged"  # listed first (newest first by id), so the pages pick it when they can


def _render_every_page(run_id: str) -> dict[str, AppTest]:
    st.cache_data.clear()  # the examples reuse run ids: nothing read for one example may serve the next
    app = AppTest.from_file(APP, default_timeout=180)
    app.session_state["run_id"] = run_id
    app.run()
    shown = {}
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception, (page, [error.value for error in app.exception])
        shown[page] = app
        if page == "pages/results.py":
            table = app.dataframe[0].value if app.dataframe else None
            shown["runs_table"] = table
    return shown


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=damage.damage())
def test_every_page_survives_a_damaged_run_and_names_it(
    finished_run: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drawn
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)
    shutil.copytree(finished_run, artifacts / "runs" / finished_run.name)
    shutil.copytree(finished_run, artifacts / "runs" / DAMAGED)
    what = damage.apply(artifacts / "runs" / DAMAGED, drawn)
    monkeypatch.setenv("ARTIFACTS_DIR", str(artifacts))
    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    row = next(run for run in list_runs(artifacts / "runs") if run["run_id"] == DAMAGED)
    shown = _render_every_page(DAMAGED)
    table = shown["runs_table"]
    assert table is not None and DAMAGED in set(table["run_id"]), what
    listed = table[table["run_id"] == DAMAGED].iloc[0]
    assert listed["state"] == row["state"], what
    if row["state"] == "broken":
        assert listed["error"] == row["error"] and row["error"], f"{what}: the reason is on the page"
