"""What the dashboard lists about runs: models ready to predict, the configured model, provenance, durations."""

import os
import socket
from pathlib import Path

import pytest

from pipeline.catalog import (
    CONFIGURED_MODEL,
    TRAINED_ELSEWHERE,
    completed_runs,
    configured_model_dir,
    find_run,
    format_duration,
    model_choices,
    provenance,
    run_config,
)
from pipeline.errors import PipelineError
from pipeline.runs import RunFolder, create_run_dir


def _run(runs_dir: Path, name: str, state: str, model: bool) -> RunFolder:
    folder = RunFolder(create_run_dir(runs_dir, name))
    folder.write_config({"backbone": "efficientnet_b0"})
    folder.update_status(state=state, pid=os.getpid(), host=socket.gethostname())
    if model:
        folder.model_path.write_bytes(b"model")
    return folder


def test_only_completed_runs_with_a_model_can_predict(tmp_path: Path) -> None:
    done = _run(tmp_path, "done", "completed", model=True)
    _run(tmp_path, "no-model", "completed", model=False)
    _run(tmp_path, "training", "running", model=True)
    assert completed_runs(tmp_path) == [done.run_id]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.keras").write_bytes(b"model")
    assert configured_model_dir(str(elsewhere / "model.keras")) == elsewhere
    assert configured_model_dir(str(elsewhere)) == elsewhere
    assert configured_model_dir(str(tmp_path / "missing")) is None and configured_model_dir("") is None
    assert model_choices(tmp_path, elsewhere) == [CONFIGURED_MODEL, done.run_id]
    assert find_run(tmp_path, CONFIGURED_MODEL, elsewhere).path == elsewhere
    assert find_run(tmp_path, done.run_id).path == done.path.resolve()


def test_a_bare_model_reads_as_trained_elsewhere_but_a_corrupt_config_is_an_error(tmp_path: Path) -> None:
    bare = RunFolder(tmp_path / "bare")
    bare.path.mkdir()
    (bare.path / "model.keras").write_bytes(b"model")
    assert run_config(bare) == TRAINED_ELSEWHERE
    corrupt = _run(tmp_path, "corrupt", "completed", model=True)
    corrupt.file("config.json").write_text("{half a json")
    with pytest.raises(PipelineError, match="do not read"):
        run_config(corrupt)


def test_provenance_names_data_weights_backbone_and_split() -> None:
    line = provenance({"data_kind": "real images", "data_dir": "/d", "weights_used": "imagenet (x.h5)",
                       "backbone": "efficientnet_b3", "image_size": 224, "split": "patient"})
    assert "**real images** (/d)" in line and "**imagenet (x.h5)**" in line
    assert "efficientnet_b3 at 224 px" in line and "split: patient" in line


@pytest.mark.parametrize(("seconds", "text"), [(None, "—"), (0, "0m 00s"), (65.9, "1m 05s"), (3599, "59m 59s"),
                                               (3600, "1h 00m"), (7380, "2h 03m")])
def test_durations(seconds, text) -> None:
    assert format_duration(seconds) == text
