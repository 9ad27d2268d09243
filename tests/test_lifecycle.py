"""The run lifecycle without TensorFlow: sweeps that go on after a failure, cancels that stop the rest, the grid."""

import os
import socket
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.core.config import PAPER_BATCH_SIZES, PAPER_EPOCHS, TrainConfig
from pipeline.runs.contract import create_run_dir
from pipeline.runs.folder import RunFolder
from pipeline.training import engines


def _queued(tmp_path: Path, count: int) -> list[RunFolder]:
    folders = []
    for index in range(count):
        folder = RunFolder(create_run_dir(tmp_path, f"run{index}"))
        folder.update_status(state="queued", pid=os.getpid(), host=socket.gethostname())
        folders.append(folder)
    return folders


def test_a_sweep_goes_on_after_a_failed_run_and_logs_its_traceback(tmp_path, monkeypatch, capsys) -> None:
    folders = _queued(tmp_path, 3)
    executed = []

    def execute(folder: RunFolder) -> dict:
        executed.append(folder.run_id)
        if folder is folders[1]:
            folder.update_status(state="failed")
            raise RuntimeError("out of memory in run 1")
        folder.update_status(state="completed")
        return {}

    monkeypatch.setattr(engines, "execute_run", execute)
    assert engines.execute_runs(folders) is False
    assert executed == [folder.run_id for folder in folders]
    assert [folder.raw_status()["state"] for folder in folders] == ["completed", "failed", "completed"]
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "RuntimeError: out of memory in run 1" in stderr


def test_a_cancel_stops_the_sweep_and_marks_the_rest_cancelled(tmp_path, monkeypatch) -> None:
    folders = _queued(tmp_path, 3)

    def execute(folder: RunFolder) -> dict:
        folder.update_status(state="cancelled")
        raise KeyboardInterrupt

    monkeypatch.setattr(engines, "execute_run", execute)
    with pytest.raises(KeyboardInterrupt):
        engines.execute_runs(folders)
    assert [folder.raw_status()["state"] for folder in folders] == ["cancelled"] * 3
    assert folders[2].raw_status()["error"] == "Cancelled with its sweep."


def test_execute_exits_non_zero_when_a_run_of_the_sweep_failed(tmp_path, monkeypatch) -> None:
    folders = _queued(tmp_path, 2)

    def execute(folder: RunFolder) -> dict:
        if folder.path == folders[1].path:
            raise RuntimeError("boom")
        return {}

    monkeypatch.setattr(engines, "execute_run", execute)
    assert main(["execute", str(folders[0].path)]) == 0
    assert main(["execute", str(folders[0].path), str(folders[1].path)]) == 1


def test_the_grid_has_one_config_per_cell_and_one_group() -> None:
    group, configs = engines.grid(TrainConfig(data_dir="x"), list(PAPER_EPOCHS), list(PAPER_BATCH_SIZES))
    assert group.startswith("grid-")
    assert [(c.epochs, c.batch_size) for c in configs] == [(e, b) for e in PAPER_EPOCHS for b in PAPER_BATCH_SIZES]
    assert len({c.default_name for c in configs}) == len(configs) == 12


def test_a_crossvalidation_summary_is_written_when_its_last_fold_completes_however_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    from pipeline.runs.crossval import write_summary_when_complete
    from tests.helpers import fake_run

    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    runs_dir = tmp_path / "runs"
    group = {"group": "cv2-20261129-000000", "cv_folds": 2}
    first = fake_run(runs_dir, "fold-1", config={**group, "cv_fold": 0})
    interrupted = fake_run(runs_dir, "fold-2", state="cancelled", config={**group, "cv_fold": 1})
    fake_run(runs_dir, "unrelated")
    assert write_summary_when_complete(first) is None, "one fold is not finished"
    shutil.rmtree(interrupted.path)  # its resumed twin, completed by another process
    fake_run(runs_dir, "fold-2-resumed", config={**group, "cv_fold": 1})
    path = write_summary_when_complete(first)
    assert path == tmp_path / "crossval" / "cv2-20261129-000000.json"
    summary = json.loads(path.read_text())
    assert summary["completed"] == 2 and [row["fold"] for row in summary["per_fold"]] == [1, 2]
    import pandas as pd

    from pipeline.evaluation.intervals import patient_bootstrap
    from pipeline.runs.folder import RunFolder

    folds = [RunFolder(p) for p in sorted(runs_dir.iterdir()) if "fold-1" in p.name or "fold-2-resumed" in p.name]
    pooled = patient_bootstrap(pd.concat([fold.predictions() for fold in folds], ignore_index=True))
    assert summary["pooled"] == json.loads(json.dumps(pooled)), "intervals of the pooled out-of-fold predictions"


def test_crossval_repeats_over_seeds_and_reports_pooled_intervals(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line's repeats (training itself is faked: fold runs with known predictions, one set per seed)."""
    from pipeline.runs.crossval import write_summary
    from tests.helpers import fake_run

    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    seeds = []

    def fake_crossval(config, folds, runs_dir, engine, **options):
        seeds.append(config.seed)
        group = f"cv{folds}-s{config.seed}"
        members = [
            fake_run(
                tmp_path / "runs",
                f"s{config.seed}-f{fold}",
                seed=config.seed * 10 + fold,
                config={"group": group, "cv_folds": folds, "cv_fold": fold},
            )
            for fold in range(folds)
        ]
        return members, write_summary(group, members)

    monkeypatch.setattr(engines, "cross_validate", fake_crossval)
    code = main(
        ["crossval", "--data", str(tmp_path), "--recipe", "scratch", "--folds", "2", "--repeats", "2", "--seed", "42"]
    )
    out = capsys.readouterr().out
    assert code == 0 and seeds == [42, 43] and "seed 42:" in out and "seed 43:" in out
    assert out.count("pooled out-of-fold, 95 % intervals:") == 2
    assert "over 2 seeds: balanced_accuracy" in out
