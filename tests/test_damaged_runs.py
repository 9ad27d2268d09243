"""Every reader of a run folder survives every damaged file: the run table lists the run as broken with the reason,
or, when what is left still reads, every reader a page uses returns instead of raising. No TensorFlow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from pipeline.core.errors import PipelineError
from pipeline.evaluation.metrics import Metrics
from pipeline.runs.catalog import intervals_of_test, list_runs, model_card
from pipeline.runs.crossval import fold_table, summarize
from pipeline.runs.folder import RunFolder
from tests import damage
from tests.helpers import fake_run


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed run folder (made-up predictions, metrics computed by the pipeline) to damage copies of."""
    folder = fake_run(
        tmp_path_factory.mktemp("template"),
        "healthy",
        config={"group": "cv2-20260101-000000-s1", "cv_folds": 2, "cv_fold": 0},
    )
    return folder.path


def _every_reader(folder: RunFolder) -> None:
    """What the pages read of a run the table does not call broken."""
    record, metrics = folder.record(), folder.metrics() or {}
    folder.history(), folder.split(), folder.predictions(), folder.skipped(), folder.evaluations()
    card = model_card(folder)
    assert card["run_id"] == folder.run_id and record.run_id == folder.run_id
    Metrics.of(metrics).per_class()
    intervals_of_test(metrics, folder.predictions)


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=damage.damage())
def test_a_damaged_run_is_listed_broken_with_its_reason_or_reads_whole(
    healthy_run: Path, tmp_path: Path, drawn
) -> None:
    runs_dir = tmp_path / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    run_dir = runs_dir / healthy_run.name
    shutil.copytree(healthy_run, run_dir)
    what = damage.apply(run_dir, drawn)
    rows = list_runs(runs_dir)
    assert [row["run_id"] for row in rows] == [healthy_run.name], what
    row = rows[0]
    folder = RunFolder(run_dir)
    if row["state"] == "broken":
        assert row["error"], f"{what}: a broken run says why"
        assert isinstance(row["group"], str) and isinstance(row["cv"], str), f"{what}: group and fold are text"
    else:
        assert row["state"] == "completed", what
        _every_reader(folder)
    table = fold_table([folder])  # a cross-validation's table keeps a damaged fold as a row that says so
    assert len(table) == 1 and table["state"].iloc[0] in ("completed", "broken"), what
    summarize(table)


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("metrics.json", '{"roc_auc": "abc"}', "not a number"),
        ("status.json", "[1, 2]", "not a JSON object"),
        ("config.json", '{"data_dir": "", "epochs": "ten"}', "epochs is 'ten'"),
        ("predictions.csv", "path,patient\n/x.png,UID_1\n", "lacks the column(s) label, predicted, prob_all"),
        ("split.csv", "", "does not read"),
    ],
)
def test_what_is_wrong_is_named(healthy_run: Path, tmp_path: Path, name: str, content: str, said: str) -> None:
    run_dir = tmp_path / "runs" / healthy_run.name
    shutil.copytree(healthy_run, run_dir)
    (run_dir / name).write_text(content)
    row = list_runs(tmp_path / "runs")[0]
    assert row["state"] == "broken" and said in row["error"], row["error"]


def test_a_folder_with_only_a_status_is_broken_not_a_model_from_elsewhere(tmp_path: Path) -> None:
    folder = fake_run(tmp_path, "half")
    for path in folder.path.iterdir():
        if path.name != "status.json":
            path.unlink()
    row = list_runs(tmp_path)[0]
    assert row["state"] == "broken" and "config.json" in row["error"]


def test_readers_raise_only_the_projects_error(healthy_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / healthy_run.name
    shutil.copytree(healthy_run, run_dir)
    (run_dir / "metrics.json").write_text('{"labels": ["ALL", "HEM"], "confusion_matrix": [[1, "x"], [0, 1]]}')
    (run_dir / "history.csv").write_text("epoch,loss\n1,0.5\n")
    folder = RunFolder(run_dir)
    with pytest.raises(PipelineError, match="confusion_matrix"):
        folder.metrics()
    with pytest.raises(PipelineError, match="lacks the column"):
        folder.history()
    assert isinstance(folder.split(), pd.DataFrame)
