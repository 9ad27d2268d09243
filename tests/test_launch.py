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


def test_the_demo_model_on_lite_weights_skips_the_recipes_fine_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `lite` recipe fine-tunes two stages (about ten minutes on fold 1 here); a demo that has to train its model
    at start-up keeps the frozen head, ready in about a minute."""
    from pipeline.core.config import recipe_config
    from pipeline.training import launch

    monkeypatch.setattr(launch, "imagenet_available", lambda backbone: False)
    monkeypatch.setattr(launch, "lite_weights_installed", lambda backbone: True)
    demo = launch.demo_model_config("cells")
    recipe = recipe_config("lite", "cells")
    assert recipe.fine_tune_blocks == 2 and recipe.fine_tune_epochs == 3 and recipe.augment
    assert (demo.recipe, demo.backbone, demo.freeze_backbone) == ("lite", recipe.backbone, True)
    assert demo.fine_tune_blocks == 0 and not demo.augment and demo.name == "demo-model"
