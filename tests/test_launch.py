"""Background runs from the dashboard: launch, resume, on a tiny run (TensorFlow: slow)."""

from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.runs.lifecycle import mark_cancelled
from tests.helpers import wait_for_state

pytestmark = pytest.mark.slow


def test_launch_resume_continues_a_cancelled_run_in_the_background(tiny_config, tmp_path: Path) -> None:
    from pipeline.training.launch import resume
    from pipeline.training.train import prepare_run

    folder = prepare_run(tiny_config.replace(epochs=2), tmp_path)
    mark_cancelled([folder])
    resume(folder.path)
    with pytest.raises(PipelineError, match="can be resumed"):
        resume(folder.path)
    status = wait_for_state(folder.path, ("completed", "failed"), timeout_s=300)
    assert status["state"] == "completed", status.get("error")
    assert folder.history()["epoch"].tolist() == [1, 2] and folder.has_model()
    assert "Traceback" not in folder.log_path.read_text()
