from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.core.errors import PipelineError, WeightsUnavailableError
from pipeline.models.model import build_model, feature_extractor, head_model, load_model

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
    with pytest.raises(PipelineError, match="is corrupt"):
        load_model(bad)
    with pytest.raises(PipelineError, match="No model file"):
        load_model(tmp_path / "missing.keras")


def _notop_file(path: Path) -> Path:
    """An `efficientnetb0_notop.h5` in Keras' legacy HDF5 format (the ImageNet file's format), from a backbone of
    random weights whose input normalisation is set as the ImageNet file sets it."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(3)
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, count = norm.get_weights()
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, count])
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, base)
    return path


def test_a_local_weights_file_computes_what_keras_imagenet_route_computes(tmp_path: Path, monkeypatch) -> None:
    from keras.src.utils import file_utils

    from pipeline.models.weights import KERAS_WEIGHTS_URL

    weights = _notop_file(tmp_path / "efficientnetb0_notop.h5")
    downloads = []

    def cached_download(fname, origin, **kwargs):
        downloads.append(origin)
        return str(weights)

    monkeypatch.setattr(file_utils, "get_file", cached_download)
    keras.utils.set_random_seed(0)
    via_imagenet, used_imagenet = build_model("efficientnet_b0", 32, "imagenet")
    assert downloads and downloads[0].startswith(KERAS_WEIGHTS_URL), "the address the reachability check asks"
    monkeypatch.undo()
    keras.utils.set_random_seed(0)
    via_file, used_file = build_model("efficientnet_b0", 32, str(weights))
    assert used_imagenet.startswith("imagenet") and "from file efficientnetb0_notop.h5" in used_file
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    from_file, from_imagenet = feature_extractor(via_file)(images), feature_extractor(via_imagenet)(images)
    scale = np.abs(np.asarray(from_imagenet)).max()  # random features are tiny (~1e-6)
    np.testing.assert_allclose(from_file, from_imagenet, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(via_file(images), via_imagenet(images), rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(0)
    no_rescaling = keras.applications.EfficientNetB0(include_top=False, weights=str(weights), input_shape=(32, 32, 3))
    pooled = np.asarray(no_rescaling(images)).mean(axis=(1, 2))
    assert np.abs(pooled - from_imagenet).max() > 0.05 * scale, (
        "Keras' own file route lacks the ImageNet variance rescaling: the comparison above tells the two apart"
    )


def test_backbone_batchnorm_momentum_is_set_for_training_from_scratch() -> None:
    model, _ = build_model("efficientnet_b0", 32, "none", bn_momentum=0.9)
    momenta = {
        layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name != "head_bn"
    }
    assert momenta == {0.9}
    default, _ = build_model("efficientnet_b0", 32, "none")
    assert default.get_layer("stem_bn").momentum == 0.99


def test_fast_mode_standardises_random_features_so_predictions_are_not_constant() -> None:
    from pipeline.models.model import adapt_feature_norm

    keras.utils.set_random_seed(0)
    model, _ = build_model("efficientnet_b0", 32, "none", freeze_backbone=True)
    images = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    images[:8] *= 0.3  # two kinds of image
    features = np.asarray(feature_extractor(model)(images))
    assert np.abs(features).mean() < 1e-3, "random EfficientNet features are tiny"
    head = head_model(model)
    head.get_layer("predictions").set_weights([np.random.default_rng(2).normal(0, 1, (256, 2)), np.zeros(2)])
    before = np.asarray(model(images))[:, 1]
    assert before.max() - before.min() < 1e-3, "without standardisation the head sees constants"
    assert adapt_feature_norm(model, features)
    after = np.asarray(model(images))[:, 1]
    assert after.max() - after.min() > 0.05
    normalised = np.asarray(model.get_layer("feature_norm")(features))
    assert np.allclose(normalised.mean(axis=0), 0, atol=1e-3) and np.median(normalised.std(axis=0)) > 0.9


def test_a_truncated_model_file_is_called_corrupt(tmp_path: Path) -> None:
    model, _ = build_model("efficientnet_b0", 32, "none")
    path = tmp_path / "model.keras"
    model.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PipelineError, match="is corrupt"):
        load_model(path)


def test_a_channel_dead_on_the_training_cells_cannot_swamp_the_head_on_new_ones() -> None:
    """ReLU6 channels that are exactly 0 on a small training set light up on new patients' cells: divided by
    a variance near 0 they reached the head as values of 1e6 (validation loss in the thousands on the sample)."""
    from pipeline.models.model import FEATURE_VARIANCE_FLOOR, adapt_feature_norm

    model, _ = build_model("efficientnet_b0", 32, "none", freeze_backbone=True)
    width = model.get_layer("head_pool").output.shape[-1]
    rng = np.random.default_rng(0)
    training = rng.uniform(0, 2, (64, width)).astype(np.float32)
    training[:, :10] = 0.0  # dead on every training cell
    training[:, 10:20] = 1e-4 * rng.random((64, 10))  # nearly dead
    assert adapt_feature_norm(model, training)
    norm = model.get_layer("feature_norm")
    new_cells = rng.uniform(0, 2, (8, width)).astype(np.float32)
    standardised = np.asarray(norm(new_cells))
    typical = training[:, 20:].var(axis=0).mean()
    bound = 2 / np.sqrt(FEATURE_VARIANCE_FLOOR * typical * (width - 20) / width)
    assert np.abs(standardised).max() <= bound, "no channel is blown up beyond the floor"
    live = np.asarray(norm(training))[:, 20:]
    assert np.allclose(live.mean(axis=0), 0, atol=1e-3) and np.allclose(live.std(axis=0), 1, atol=1e-2), (
        "channels that vary are standardised as before"
    )


@pytest.mark.slow
def test_a_models_compiled_forward_pass_is_made_once_and_traced_once_for_any_batch_size() -> None:
    from pipeline.inference.batches import extract_features
    from pipeline.models.model import compiled_forward, feature_extractor

    model, _ = build_model("efficientnet_lite0", 32, "none", freeze_backbone=True)
    for images in (5, 33, 7, 1, 40):  # batches of 32 and their remainders, as a service's batches come
        extract_features(model, np.zeros((images, 32, 32, 3), np.uint8))
    forward = compiled_forward(feature_extractor(model))
    assert forward is compiled_forward(feature_extractor(model)), "one function per model"
    assert forward.experimental_get_tracing_count() == 1, "no tracing per batch size"
