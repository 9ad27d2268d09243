"""Predictions as records, and explanations that explain the class shown: a run with test-time augmentation can
call an image one class while a single plain pass would call it the other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import ALL_INDEX, CLASS_NAMES
from pipeline.config import ClaheSettings, TrainConfig

pytestmark = pytest.mark.slow  # builds a Keras model

SIZE = 32


def _orientation_model():
    """P(ALL) rises steeply with how much brighter the left half is than the right, against a bias towards HEM:
    a cell bright on the left is ALL as it stands, but HEM on average over its 8 flips and rotations."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(1, 1, name="top_activation", kernel_initializer="ones",
                                   use_bias=False)(inputs)
    flat = keras.layers.Flatten()(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(flat)
    model = keras.Model(inputs, outputs)
    side = np.zeros((SIZE, SIZE), np.float32)
    side[:, : SIZE // 2], side[:, SIZE // 2:] = 1, -1
    kernel = np.zeros((SIZE * SIZE, 2), np.float32)
    kernel[:, ALL_INDEX] = side.ravel() * 6 / (3 * 255 * SIZE * SIZE / 2)
    kernel[:, 1 - ALL_INDEX] = -kernel[:, ALL_INDEX]  # the right half speaks for HEM
    bias = np.zeros(2, np.float32)
    bias[ALL_INDEX], bias[1 - ALL_INDEX] = -0.5, 0.5
    model.get_layer("predictions").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def tta_predictor():
    from pipeline.predict import Predictor

    config = TrainConfig(data_dir="", backbone="efficientnet_b0", image_size=SIZE, tta=True,
                         clahe=ClaheSettings(enabled=False))
    return Predictor(_orientation_model(), config, Path("."))


def test_the_heatmap_explains_the_class_shown_with_tta(tta_predictor) -> None:
    from pipeline.explain import Explainer, explain_prediction

    image = np.full((SIZE, SIZE, 3), 60, np.uint8)
    image[:, : SIZE // 2] = 255
    prediction = tta_predictor.predict_image(image)
    single = np.asarray(tta_predictor.model(image[None].astype(np.float32)))[0]
    assert CLASS_NAMES[int(np.argmax(single))] == "ALL", "one plain pass calls it ALL"
    assert prediction.predicted == "HEM" and prediction.class_index == CLASS_NAMES.index("HEM") and prediction.tta
    assert prediction.probability == pytest.approx(1 - prediction.prob_all) and prediction.probability > 0.5
    explainer = Explainer(tta_predictor.model, forward=tta_predictor.forward)
    shown = explain_prediction(explainer, prediction, "layercam")
    for_hem = explainer.heatmap(prediction.input, "layercam", class_index=CLASS_NAMES.index("HEM"))
    for_all = explainer.heatmap(prediction.input, "layercam", class_index=ALL_INDEX)
    np.testing.assert_allclose(shown, for_hem, atol=1e-6)
    assert shown[:, SIZE // 2:].mean() > shown[:, : SIZE // 2].mean(), "HEM's evidence is the right half"
    assert for_all[:, : SIZE // 2].mean() > for_all[:, SIZE // 2:].mean(), "the plain pass's class: the left"
