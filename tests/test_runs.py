import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import PROJECT_ROOT
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json_atomic
from pipeline.runs import contract as runs
from pipeline.runs.catalog import list_runs, progress_summary
from pipeline.runs.contract import create_run_dir, resolve_run_dir
from pipeline.runs.folder import RunFolder
from pipeline.runs.lifecycle import Heartbeat
from tests.helpers import fake_run


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


def test_a_run_whose_process_is_gone_is_never_running(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = RunFolder(create_run_dir(tmp_path, "x"))
    folder.write_config({"epochs": 1})
    folder.update_status(state="running", pid=dead.pid, host=socket.gethostname())
    assert folder.status()["state"] == "failed" and "ended without finishing" in folder.status()["error"]
    folder.update_status(pid=os.getpid())
    assert folder.status()["state"] == "running"


def test_run_ids_cannot_escape_the_runs_folder(tmp_path: Path) -> None:
    (tmp_path / "ok-run").mkdir()
    assert resolve_run_dir(tmp_path, "ok-run") == (tmp_path / "ok-run").resolve()
    for bad in ["../etc", "..", "a/../../b", "/etc/passwd", "a/b", "", ".hidden"]:
        with pytest.raises(PipelineError):
            resolve_run_dir(tmp_path, bad)


def test_broken_run_folders_are_listed_as_broken_and_others_still_listed(tmp_path: Path) -> None:
    good = fake_run(tmp_path, "good", config={"epochs": 3})
    broken = RunFolder(create_run_dir(tmp_path, "broken"))
    (broken.path / "config.json").write_text("{not json")
    (broken.path / "status.json").write_text("{}")
    rows = {row["run_id"]: row for row in list_runs(tmp_path)}
    assert rows[good.run_id]["state"] == "completed" and rows[good.run_id]["epochs"] == 3
    assert rows[broken.run_id]["state"] == "broken" and "Unreadable" in rows[broken.run_id]["error"]


def test_run_folder_names_are_unique(tmp_path: Path) -> None:
    names = {create_run_dir(tmp_path, "same").name for _ in range(5)}
    assert len(names) == 5


def test_only_failed_or_cancelled_runs_resume(tmp_path: Path) -> None:
    folder = RunFolder(create_run_dir(tmp_path, "done"))
    folder.update_status(state="completed")
    with pytest.raises(PipelineError, match="Only a failed or cancelled run"):
        folder.check_resumable()
    folder.update_status(state="cancelled")
    folder.check_resumable()


def test_progress_summary_counts_finished_epochs_and_extrapolates_the_rest() -> None:
    status = {
        "phase": "training",
        "epoch": 3,
        "epochs": 10,
        "progress": 0.5,
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T00:00:50+00:00",
    }
    summary = progress_summary(status)
    assert summary["fraction"] == pytest.approx(0.25)  # 2.5 of 10 epochs
    assert summary["elapsed_s"] == 50 and summary["eta_s"] == pytest.approx(150)
    preparing = progress_summary({**status, "phase": "preprocessing images", "epochs_done": 0})
    assert preparing["fraction"] == 0 and preparing["eta_s"] is None
    done = progress_summary({**status, "phase": "done", "epochs_done": 10})
    assert done["fraction"] == 1.0 and done["eta_s"] is None
    assert progress_summary({"epochs": 4})["elapsed_s"] is None


class _SavesItsName:
    """Stands in for a Keras model: `save(path)` writes a file, as `model.save` does."""

    def save(self, path: Path) -> None:
        Path(path).write_text(Path(path).name)


def test_checkpoints_keep_only_the_newest_and_model_files_are_written_whole(tmp_path: Path) -> None:
    folder = RunFolder(create_run_dir(tmp_path, "x"))
    for epoch in (1, 2, 3):
        folder.save_checkpoint(_SavesItsName(), epoch)
    assert [p.name for p in folder.checkpoint_dir.iterdir()] == ["epoch-0003.keras"]
    assert folder.latest_checkpoint() == (3, folder.checkpoint_path(3))
    folder.save_model(_SavesItsName())
    assert folder.has_model() and not list(folder.path.glob(".*tmp*"))
    folder.remove_checkpoints()
    assert folder.latest_checkpoint() is None


def test_a_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from pipeline.core.files import atomic_write

    target = tmp_path / "model.keras"
    target.write_text("old")

    def crash(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_evaluation_folders_and_config_presence(tmp_path: Path) -> None:
    folder = RunFolder(create_run_dir(tmp_path, "x"))
    assert not folder.has_config()
    folder.write_config({"epochs": 1})
    assert folder.has_config()
    evaluation = folder.evaluation_dir("other data/prelim")
    assert evaluation.is_dir() and evaluation.parent == folder.path / runs.EVALUATIONS_DIR
    assert "/" not in evaluation.name


def test_cancelled_and_failed_are_the_resumable_states(tmp_path: Path) -> None:
    folder = RunFolder(create_run_dir(tmp_path, "x"))
    for state in runs.STATES:
        folder.update_status(state=state, pid=os.getpid(), host=socket.gethostname())
        if state in runs.RESUMABLE_STATES:
            folder.check_resumable()
        else:
            with pytest.raises(PipelineError):
                folder.check_resumable()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f.file(runs.HISTORY).write_text(""), "history.csv of .* does not read"),
        (lambda f: f.file(runs.HISTORY).write_text("epoch,accuracy\n"), "lacks the column"),
        (lambda f: f.write_history([]), "holds no epoch"),
        (lambda f: f.file(runs.PREDICTIONS).unlink(), "does not read"),
        (lambda f: f.file(runs.METRICS).unlink(), "metrics.json is missing"),
        (lambda f: f.model_path.write_bytes(f.model_path.read_bytes()[:20]), "model.keras is corrupt"),
    ],
    ids=["empty-history", "history-columns", "no-epoch", "no-predictions", "no-metrics", "truncated-model"],
)
def test_a_completed_run_missing_what_it_must_hold_is_broken_with_the_reason(tmp_path: Path, damage, reason) -> None:
    folder = fake_run(tmp_path, "x")
    assert list_runs(tmp_path)[0]["state"] == "completed"
    damage(folder)
    row = list_runs(tmp_path)[0]
    assert row["state"] == "broken"
    assert re.search(reason, row["error"]), row["error"]


def test_a_run_on_another_host_is_judged_by_its_heartbeat_not_by_a_local_pid(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    folder = RunFolder(create_run_dir(tmp_path, "remote"))
    recent = datetime.now(timezone.utc) - timedelta(seconds=runs.STALE_AFTER_S / 2)
    write_json_atomic(
        folder.file(runs.STATUS), {"state": "running", "host": "node-7", "pid": 1, "updated_at": recent.isoformat()}
    )
    assert folder.status()["state"] == "running", "pid 1 here says nothing about node-7"
    old = datetime.now(timezone.utc) - timedelta(seconds=runs.STALE_AFTER_S + 5)
    write_json_atomic(
        folder.file(runs.STATUS), {"state": "running", "host": "node-7", "pid": 1, "updated_at": old.isoformat()}
    )
    status = folder.status()
    assert status["state"] == "failed" and status["stale"] and "No heartbeat from node-7" in status["error"]


def test_the_heartbeat_keeps_a_run_fresh_and_never_undoes_a_state_change(tmp_path: Path) -> None:
    import time

    folder = RunFolder(create_run_dir(tmp_path, "beating"))
    folder.update_status(state="running", pid=os.getpid())
    first = folder.raw_status()["updated_at"]
    with Heartbeat(folder, every_s=0.01):
        for epoch in range(1, 200):
            folder.update_status(epoch=epoch)
        time.sleep(1.1)
        folder.update_status(state="completed")
        time.sleep(0.05)
    status = folder.raw_status()
    assert status["state"] == "completed" and status["epoch"] == 199
    assert status["updated_at"] > first


def test_concurrent_writers_of_one_file_each_rename_a_whole_file(tmp_path: Path) -> None:
    """Runs on several nodes filling one shared cache: unique temporary names, no half file, no error."""
    import threading

    import numpy as np

    from pipeline.core.files import save_npy_atomic

    target = tmp_path / "features.npy"
    errors: list[BaseException] = []

    def write(value: int) -> None:
        try:
            for _ in range(30):
                save_npy_atomic(target, np.full((200, 200), value, np.float32))
        except BaseException as error:  # noqa: BLE001 - collected for the assert
            errors.append(error)

    threads = [threading.Thread(target=write, args=(value,)) for value in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    final = np.load(target)
    assert final.shape == (200, 200) and len(np.unique(final)) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["features.npy"], "no temporary file left"


def test_a_run_record_is_its_train_config_plus_provenance_with_one_weights_label(tmp_path: Path) -> None:
    from pipeline.core.config import TrainConfig
    from pipeline.runs.catalog import model_card
    from pipeline.runs.display import provenance
    from pipeline.runs.record import RunRecord

    done = fake_run(
        tmp_path,
        "done",
        config={"weights": "imagenet", "weights_used": "imagenet (keras)", "group": "g", "created": "today"},
    )
    record = done.record()
    assert isinstance(record, RunRecord) and isinstance(record.config, TrainConfig)
    assert record.config.backbone == "efficientnet_b0" and record.provenance["group"] == "g"
    assert not set(record.provenance) & set(record.config.to_dict()), "provenance holds what the config does not"
    assert record.settings == {**done.config(), **record.config.to_dict()}
    queued = fake_run(tmp_path, "queued", state="queued", config={"weights": "imagenet", "weights_used": None})
    label = queued.record().weights
    assert label == "imagenet (not loaded yet)"
    row = next(run for run in list_runs(tmp_path) if run["run_id"] == queued.run_id)
    line = provenance(queued.config(), markdown=False)
    assert row["weights"] == label == model_card(queued)["weights"] and label in line, (
        "the table, the card and the provenance line name a queued run's weights alike"
    )
    assert done.record().weights == "imagenet (keras)" == model_card(done)["weights"]
    bare = RunFolder(tmp_path / "bare")
    bare.path.mkdir()
    assert bare.record().trained_elsewhere and bare.record().weights == "unknown"
    broken = fake_run(tmp_path, "broken", state="queued")
    broken.file("config.json").write_text("{not json")
    with pytest.raises(PipelineError, match="do not read"):
        broken.record()


def _hammer_status(run_dir: str, name: str, times: int, start_at: float) -> None:
    import time

    folder = RunFolder(Path(run_dir))
    time.sleep(max(0.0, start_at - time.time()))  # every writer at once
    for index in range(times):
        folder.update_status(**{name: index})


def test_status_updates_from_several_processes_lose_nothing(tmp_path: Path) -> None:
    import multiprocessing
    import time

    folder = RunFolder(tmp_path / "run")
    folder.update_status(state="running")
    context = multiprocessing.get_context("fork")
    start_at = time.time() + 1.0
    writers = [
        context.Process(target=_hammer_status, args=(str(folder.path), f"writer{index}", 150, start_at))
        for index in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    status = folder.raw_status()
    assert [status.get(f"writer{index}") for index in range(4)] == [149] * 4, "every writer's last change is kept"
    assert status["state"] == "running"


def test_a_run_whose_config_does_not_read_ends_failed_with_its_error_under_both_engines(tmp_path: Path) -> None:
    from pipeline.training.cluster import _execute
    from pipeline.training.engines import execute_runs

    for name, engine in (
        ("local", lambda folder: execute_runs([folder])),
        ("ray task body", lambda folder: _execute(str(folder.path))),
    ):
        folder = RunFolder(tmp_path / name)
        folder.update_status(state="queued", phase="queued")
        folder.file("config.json").write_text('{"data_dir": "x", "epochs": "ten"')  # truncated
        engine(folder)
        status = folder.raw_status()
        assert status["state"] == "failed", f"{name}: a run that cannot start says so, never stays queued"
        assert "config.json" in status["error"] or "JSON" in status["error"] or "Expecting" in status["error"]


def test_a_splits_relative_paths_resolve_folder_by_folder_as_each_path_alone_would(tmp_path: Path, monkeypatch) -> None:
    from pipeline.runs.readers import resolvable, resolvable_all

    work = tmp_path / "work"
    (work / "data" / "all").mkdir(parents=True)
    (work / "data" / "all" / "a.png").write_bytes(b"x")
    (work / "linked").symlink_to(work / "data")
    monkeypatch.chdir(work)
    paths = [
        "data/all/a.png",  # under the working folder
        "data/all/b.png",  # its folder is there, the file is not
        "linked/all/a.png",  # a folder through a link: resolved like the path alone
        "samples/cnmc-fold1/README.md",  # only under the project's folder
        "gone/c.png",  # nowhere
        str(work / "data" / "all" / "a.png"),  # absolute: kept
    ]
    assert resolvable_all(paths) == [resolvable(path) for path in paths]
    assert resolvable_all(paths)[2] == str((work / "data" / "all" / "a.png").resolve())
    assert resolvable_all(paths)[3] == str(PROJECT_ROOT / "samples" / "cnmc-fold1" / "README.md")
    split = "path,patient,label,subset\n" + "".join(f"{path},P1,ALL,train\n" for path in paths[:3])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "split.csv").write_text(split)
    assert list(RunFolder(tmp_path / "run").split()["path"]) == [resolvable(path) for path in paths[:3]]
