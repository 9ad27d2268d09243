import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.runs import RunFolder, create_run_dir, list_runs, resolve_run_dir, write_json_atomic


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
    good = RunFolder(create_run_dir(tmp_path, "good"))
    good.write_config({"epochs": 3, "backbone": "efficientnet_b0"})
    good.update_status(state="completed")
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
