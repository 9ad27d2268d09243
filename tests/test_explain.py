import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.core.errors import PipelineError
from pipeline.explain.cams import (
    DEFAULT_LAYER,
    METHODS,
    Explainer,
    layer_label,
    logits_model,
    method_label,
    stage_layers,
)
from pipeline.explain.maps import upsample
from pipeline.explain.pictures import overlay
from pipeline.models.model import build_model

pytestmark = pytest.mark.slow  # builds models with TensorFlow


@pytest.fixture(scope="module")
def b0_explainer() -> Explainer:
    keras.utils.set_random_seed(0)
    model, _ = build_model("efficientnet_b0", 64, "none")
    return Explainer(model)


@pytest.fixture(scope="module")
def cell_image() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = np.zeros((64, 64, 3), np.float32)
    image[16:48, 20:44] = rng.uniform(60, 200, (32, 24, 3))
    return image


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_an_input_sized_map_in_0_1(b0_explainer: Explainer, cell_image, method: str) -> None:
    heatmap = b0_explainer.heatmap(cell_image, method)
    assert heatmap.shape == (64, 64) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() <= 1 and heatmap.max() > 0.5


def _tape_gradcam(model: keras.Model, image: np.ndarray, layer: str, class_index: int) -> np.ndarray:
    """Grad-CAM written independently from the keras-io example, on the pre-softmax score."""
    scores = logits_model(model)
    grad_model = keras.Model(scores.input, [scores.get_layer(layer).output, scores.output])
    with tf.GradientTape() as tape:
        activations, output = grad_model(image[None], training=False)
        score = output[:, class_index]
    gradients = tape.gradient(score, activations)[0].numpy()
    activations = activations[0].numpy()
    cam = np.maximum(np.einsum("hwc,c->hw", activations, gradients.mean(axis=(0, 1))), 0)
    cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)


def _normalized(cam: np.ndarray) -> np.ndarray:
    return (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)


@pytest.mark.parametrize("layer", ["top_activation", "block6a_expand_activation"])
def test_gradcam_matches_an_independent_gradient_tape_and_tf_keras_vis(b0_explainer, cell_image, layer) -> None:
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.scores import CategoricalScore

    ours = b0_explainer.heatmap(cell_image, "gradcam", layer, class_index=1)
    assert np.allclose(ours, _tape_gradcam(b0_explainer.model, cell_image, layer, 1), atol=1e-4)
    batch = cell_image[None]
    library = Gradcam(b0_explainer.scores_model, clone=False)(
        CategoricalScore([1]), batch, penultimate_layer=layer, expand_cam=False
    )[0]
    assert np.allclose(_normalized(b0_explainer.layer_cam(batch, "gradcam", layer, 1)), library, atol=1e-4)
    library_layercam = Layercam(b0_explainer.scores_model, clone=False)(
        CategoricalScore([1]), batch, penultimate_layer=layer, expand_cam=False
    )[0]
    assert np.allclose(_normalized(b0_explainer.layer_cam(batch, "layercam", layer, 1)), library_layercam, atol=1e-3)


def test_maps_are_upsampled_with_pixel_centres_aligned() -> None:
    cam = np.zeros((2, 2), np.float32)
    cam[0, 0] = 1.0
    up = upsample(cam, 4, 4)
    assert up.shape == (4, 4) and up[0, 0] == 1.0 and up[3, 3] == 0.0
    assert up[0, 1] == 0.75 and up[0, 2] == 0.25, "pixel centres aligned (cv2.resize), not corners (2/3, 1/3)"


def test_score_cam_over_some_channels_is_named_faster_score_cam() -> None:
    assert method_label("scorecam", 16, 1536) == "Faster Score-CAM (16 of 1536 channels)"
    assert method_label("scorecam", -1, 1536) == "Score-CAM" and method_label("gradcam") == "Grad-CAM"


def _red_detector() -> keras.Model:
    """A model that can only look at red: P(ALL) rises with the mean red activation."""
    inputs = keras.Input((64, 64, 3))
    features = keras.layers.Conv2D(1, 1, use_bias=False, activation="relu", name="top_activation")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("top_activation").set_weights([np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1)])
    model.get_layer("predictions").set_weights([np.array([[-0.5, 0.5]]), np.array([4.0, -4.0])])
    return model


def test_heatmap_peaks_on_the_only_object_that_matters_and_deleting_it_beats_random() -> None:
    image = np.zeros((64, 64, 3), np.float32)
    image[:, :, 1] = 120  # green everywhere: the model cannot see it
    image[8:24, 36:52, 0] = 255  # one red object
    explainer = Explainer(_red_detector())
    assert np.argmax(explainer.predict(image[None])[0]) == 1
    for method in METHODS:
        heatmap = explainer.heatmap(image, method)
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert 8 <= peak[0] < 24 and 36 <= peak[1] < 52, method
        assert heatmap[8:24, 36:52].mean() > 5 * heatmap[32:, :32].mean() + 1e-3, method
    road = explainer.road(image, explainer.heatmap(image, "gradcam"), baseline=False)
    assert road["class_index"] == 1 and road["fractions"][0] == 0.1
    assert road["morf"][0] < -0.3, "removing the red object first takes ALL away"
    assert abs(road["lerf"][0]) < 0.05 and road["combined"] > 0.1


def test_feature_maps_of_every_stage(b0_explainer: Explainer, cell_image) -> None:
    stages = stage_layers(b0_explainer.model)
    assert list(stages) == [f"block{n}" for n in range(1, 8)] + ["top"]
    assert layer_label(DEFAULT_LAYER, b0_explainer.model) == "the last convolutional stage"
    assert layer_label(stages["block5"], b0_explainer.model) == f"the end of stage 5 of 7 ({stages['block5']})"
    grids = b0_explainer.feature_maps(cell_image, channels=9)
    assert set(grids) == set(stages)
    top = grids["top"]
    side = b0_explainer.model.get_layer("top_activation").output.shape[1]
    assert top.shape == (3 * side + 2, 3 * side + 2) and top.min() >= 0 and top.max() <= 1
    with pytest.raises(PipelineError, match="Unknown stage"):
        b0_explainer.feature_maps(cell_image, ["block9"])


def test_unknown_method_or_layer_is_a_clear_error(b0_explainer: Explainer, cell_image) -> None:
    with pytest.raises(PipelineError, match="Unknown explanation method"):
        b0_explainer.heatmap(cell_image, "magic")
    with pytest.raises(PipelineError, match="no layer named"):
        b0_explainer.heatmap(cell_image, "gradcam", "nope")


def test_overlay_blends_at_the_given_opacity() -> None:
    image = np.full((10, 10, 3), 100, np.uint8)
    assert (overlay(image, np.zeros((5, 5), np.float32), opacity=0.0) == image).all()
    full = overlay(image, np.ones((5, 5), np.float32), opacity=1.0)
    assert full.shape == (10, 10, 3) and full[0, 0].tolist() == [253, 231, 37]  # viridis at 1.0
    half = np.zeros((10, 10), np.float32)
    half[:, 5:] = 1.0
    legible = overlay(image, half, opacity=0.6)
    assert (legible[:, :4] == 100).all(), "where the map is low the image shows through unchanged"
    assert legible[:, 6:].tolist() == [[[round(100 * 0.4 + c * 0.6) for c in (253, 231, 37)]] * 4] * 10


def test_the_explainer_names_its_layers_stages_and_channels(b0_explainer: Explainer) -> None:
    """What Predict offers (layers, stages, Score-CAM's channel count) comes from the explainer, not from Keras."""
    layers = b0_explainer.layers()
    assert layers[0] == "top_activation" and len(layers) == len(set(layers))
    assert layers[1].startswith("block7") and layers[-1].startswith("block1"), "deepest stage first"
    assert b0_explainer.stages() == [f"block{n}" for n in range(1, 8)] + ["top"]
    assert b0_explainer.channels("top_activation") == 1280, "EfficientNet-B0's last convolution"
    assert b0_explainer.layer_label("top_activation") == "the last convolutional stage"
    assert b0_explainer.layer_label(layers[1]) == f"the end of stage 7 of 7 ({layers[1]})"


@pytest.mark.slow
def test_a_saved_rows_overlay_is_the_grad_cam_of_the_class_the_run_called(finished_run, tmp_path) -> None:
    from pipeline.core.errors import ImageReadError
    from pipeline.data.decode import read_image
    from pipeline.explain.cams import Explainer
    from pipeline.explain.pictures import saved_row_overlay
    from pipeline.inference.answers import class_index_of
    from pipeline.inference.predict import Predictor
    from pipeline.runs.folder import RunFolder

    predictor = Predictor.from_run(finished_run)
    explainer = Explainer(predictor.model, forward=predictor.forward)
    row = RunFolder(finished_run).predictions().iloc[0]
    picture = saved_row_overlay(predictor, explainer, row.path, row.predicted)
    model_input = predictor.prepare(read_image(row.path))
    assert picture.dtype == np.uint8 and picture.shape == model_input.shape
    called = overlay(model_input, explainer.heatmap(model_input, "gradcam", class_index=class_index_of(row.predicted)))
    np.testing.assert_array_equal(picture, called)
    with pytest.raises(ImageReadError):
        saved_row_overlay(predictor, explainer, str(tmp_path / "gone.png"), row.predicted)
