from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError, WeightsUnavailableError
from pipeline.model import build_model, feature_extractor, head_model, load_model

pytestmark = pytest.mark.slow  # builds models with TensorFlow


def test_model_is_flat_with_the_papers_head() -> None:
    model, weights_used = build_model("efficientnet_b0", 32, "none")
    assert weights_used.startswith("none")
    names = [layer.name for layer in model.layers]
    assert "top_activation" in names, "the backbone must not be nested as one layer (Grad-CAM needs it)"
    assert names[-5:] == ["head_pool", "head_bn", "head_dense", "head_dropout", "predictions"]
    assert model.get_layer("head_dense").units == 256 and model.get_layer("head_dropout").rate == 0.4
    output = model(np.zeros((2, 32, 32, 3), np.float32))
    assert output.shape == (2, 2)
    assert np.allclose(np.asarray(output).sum(axis=1), 1.0, atol=1e-5)


def test_head_model_shares_layers_with_the_full_model() -> None:
    model, _ = build_model("efficientnet_b0", 32, "none", freeze_backbone=True)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    features = feature_extractor(model)(images)
    assert np.allclose(head_model(model)(features), model(images), atol=1e-5)


def test_imagenet_weights_offline_give_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/efficientnetb0_notop.h5: None")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(WeightsUnavailableError, match="could not be had.*--weights none"):
        build_model("efficientnet_b0", 32, "imagenet")


def test_missing_or_wrong_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("efficientnet_b0", 32, str(tmp_path / "nope.h5"))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        build_model("efficientnet_b0", 32, str(bad))


def test_a_model_file_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PipelineError, match="does not load"):
        load_model(bad)
    with pytest.raises(PipelineError, match="No model file"):
        load_model(tmp_path / "missing.keras")
