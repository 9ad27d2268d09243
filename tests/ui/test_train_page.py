"""The Train page without TensorFlow: a launch while another run is active is refused and starts nothing."""

import os
import socket
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pipeline.runs import RunFolder, create_run_dir

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
    assert any(busy.run_id in error.value and "still running" in error.value for error in app.error), \
        [error.value for error in app.error]
    assert [path.name for path in (tmp_path / "runs").iterdir() if path.is_dir()] == [busy.run_id]
