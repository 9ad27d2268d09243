"""The Train page without TensorFlow: a launch while another run is active is refused and starts nothing."""

import os
import socket
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pipeline.runs.contract import create_run_dir
from pipeline.runs.folder import RunFolder
from tests.helpers import record_spawns, shown_text

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def test_a_second_launch_is_refused_with_the_busy_run_named(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    busy = RunFolder(create_run_dir(tmp_path / "runs", "busy"))
    busy.write_config({"epochs": 3})
    busy.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), epoch=1, epochs=3)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/train.py").run()
    assert not app.exception, [e.value for e in app.exception]
    next(button for button in app.button if button.label == "Start training").click().run()
    assert any(
        busy.run_id in shown_text(error.value) and "still running" in shown_text(error.value) for error in app.error
    ), [error.value for error in app.error]
    assert [path.name for path in (tmp_path / "runs").iterdir() if path.is_dir()] == [busy.run_id]


def test_the_grid_queues_one_run_per_epochs_and_batch_size_cell(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:

    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    spawned = record_spawns(monkeypatch)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/train.py").run()
    assert not app.exception, [e.value for e in app.exception]
    grid_epochs = next(box for box in app.multiselect if box.label == "Grid epochs")
    grid_batches = next(box for box in app.multiselect if box.label == "Grid batch sizes")
    assert grid_epochs.value == [10, 20, 30, 40, 50, 60] and grid_batches.value == [16, 32], "the paper's grid"
    next(radio for radio in app.radio if radio.label == "Launch").set_value("the paper's grid")
    grid_epochs.set_value([10, 20])
    grid_batches.set_value([16, 32])
    next(button for button in app.button if button.label == "Start training").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(spawned) == 1, "one background process for the whole grid"
    configs = [folder.config() for folder in spawned[0]]
    assert sorted((config["epochs"], config["batch_size"]) for config in configs) == [
        (10, 16),
        (10, 32),
        (20, 16),
        (20, 32),
    ]
    assert len({config["group"] for config in configs}) == 1 and configs[0]["group"].startswith("grid")
    assert all(config["data_dir"] == str(tiny_data) for config in configs)


def test_a_cross_validation_with_a_final_model_asks_its_process_for_the_final_model(
    tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    from pipeline.training import launch

    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    spawned: list = []
    monkeypatch.setattr(
        launch, "_spawn", lambda folders, engine=None: spawned.append((folders, engine)) or type("P", (), {"pid": 1})()
    )
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/train.py").run()
    assert "none" not in next(box for box in app.selectbox if box.label == "Split").options
    next(radio for radio in app.radio if radio.label == "Launch").set_value("cross-validation, then a final model")
    next(button for button in app.button if button.label == "Start training").click().run()
    assert not app.exception, [e.value for e in app.exception]
    ((folders, engine),) = spawned
    assert engine == ["--final"] and [folder.config()["cv_fold"] for folder in folders] == [0, 1, 2]
    assert launch.execute_command(folders, engine)[-1] == "--final"
