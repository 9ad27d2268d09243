import pytest

from pipeline.core.config import ClaheSettings, TrainConfig
from pipeline.core.errors import PipelineError


def test_defaults_are_the_papers_and_survive_json() -> None:
    config = TrainConfig(data_dir="data/demo")
    assert (config.backbone, config.image_size, config.epochs, config.batch_size) == ("efficientnet_b3", 224, 50, 16)
    assert (config.learning_rate, config.decay_steps, config.decay_rate) == (1e-4, 900, 0.95)
    changed = config.replace(clahe=ClaheSettings(clip_limit=3.0, tile_grid=4), split="image", folds="0")
    assert TrainConfig.from_json(changed.to_json()) == changed
    assert TrainConfig.from_dict({**changed.to_dict(), "run_id": "ignored"}) == changed


@pytest.mark.parametrize(
    "bad",
    [
        {"backbone": "resnet50"},
        {"split": "random"},
        {"epochs": 0},
        {"image_size": 8},
        {"learning_rate": 0.0},
        {"test_fraction": 1.5},
    ],
)
def test_bad_settings_are_refused_with_a_message(bad: dict) -> None:
    with pytest.raises(PipelineError):
        TrainConfig(data_dir="x", **bad)


def test_malformed_saved_settings_are_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="incomplete or malformed"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(PipelineError, match="incomplete or malformed"):
        TrainConfig.from_dict({"data_dir": "x", "clahe": {"clip": 2}})


def test_a_frozen_backbone_with_random_weights_is_refused_unless_asked_for_and_then_labelled() -> None:
    from pipeline.runs.record import weights_label

    with pytest.raises(PipelineError, match="features are random.*--random-features"):
        TrainConfig(data_dir="cells", weights="none", freeze_backbone=True)
    asked = TrainConfig(data_dir="cells", weights="none", freeze_backbone=True, random_features=True)
    settings = {**asked.to_dict(), "weights_used": "none (random initialisation)"}
    assert weights_label(settings).startswith("random features"), "labelled wherever the weights are named"
    assert weights_label({**settings, "freeze_backbone": False}) == "none (random initialisation)"
    assert TrainConfig(data_dir="cells", weights="imagenet", freeze_backbone=True).weights == "imagenet"
