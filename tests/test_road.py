"""ROAD: imputation that leaves no trace of the mask, the MoRF/LeRF bookkeeping, and a ranking that tells a
map of what the model uses from a map that only knows where the cell is."""

import numpy as np
import pytest

from pipeline.explain.road import cell_mask, noisy_linear_impute, random_in_cell, road


def test_imputation_fills_a_hole_in_a_smooth_image_from_its_surroundings() -> None:
    y, x = np.mgrid[0:40, 0:40]
    image = np.stack([x * 2.0 + y, x + 50.0, 200 - y * 3.0], axis=-1).astype(np.float32)
    removed = np.zeros((40, 40), bool)
    removed[10:30, 12:28] = True
    filled = noisy_linear_impute(image, removed, np.random.default_rng(0), noise=0.0)
    assert np.allclose(filled[removed], image[removed], atol=1e-3), "a linear ramp is its neighbours' mean"
    assert np.array_equal(filled[~removed], image[~removed])
    noisy = noisy_linear_impute(image, removed, np.random.default_rng(0))
    assert 1.0 < np.std(noisy[removed] - image[removed]) < 4.0, "1 % of the range as noise"


def _spot_image() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((64, 64, 3), np.float32)
    image[12:52, 12:52] = 100.0  # the cell
    image[20:23, 20:23] = 250.0  # what the "model" looks at
    spot = np.zeros((64, 64), np.float32)
    spot[20:23, 20:23] = 1.0
    return image, spot


def _spot_score(images: np.ndarray) -> np.ndarray:
    return images[:, 20:23, 20:23, 0].mean(axis=(1, 2)) / 255.0


def test_removing_what_the_model_uses_first_scores_higher_than_a_foreground_mask() -> None:
    image, spot = _spot_image()
    cell = cell_mask(image)
    assert cell.sum() == 40 * 40
    exact = road(image, spot + 0.01 * cell, _spot_score)
    foreground = road(image, cell.astype(np.float32), _spot_score)
    random_map = road(image, random_in_cell(cell, np.random.default_rng(1)), _spot_score)
    assert exact["morf"][0] < -0.3 and abs(exact["lerf"][0]) < 0.01
    assert exact["combined"] > foreground["combined"] + 0.03 and exact["combined"] > random_map["combined"] + 0.03
    assert len(exact["morf"]) == len(exact["lerf"]) == 9


@pytest.mark.slow
def test_on_a_trained_model_grad_cam_beats_the_foreground_mask_and_random_maps_in_the_cell() -> None:
    """Synthetic cells whose class is a bright spot inside them (the discriminative region is known)."""
    import keras

    from pipeline.explain.cams import Explainer

    rng = np.random.default_rng(0)
    images, labels = [], []
    for index in range(600):
        image = np.zeros((48, 48, 3), np.float32)
        cy, cx = rng.integers(18, 30, 2)
        yy, xx = np.mgrid[0:48, 0:48]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 14**2
        image[inside] = [110, 40, 130]
        image[inside] += rng.normal(0, 8, (inside.sum(), 3))
        if index % 2:
            sy, sx = cy + rng.integers(-7, 7), cx + rng.integers(-7, 7)
            image[sy - 2 : sy + 2, sx - 2 : sx + 2] = [240, 200, 240]
        images.append(np.clip(image, 0, 255))
        labels.append(index % 2)
    images, labels = np.stack(images), np.array(labels)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="top_activation")(x)
    x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[:500], labels[:500], epochs=8, batch_size=32, verbose=0)
    assert model.evaluate(images[500:], labels[500:], verbose=0)[1] > 0.9
    explainer = Explainer(model)
    scores = {"gradcam": [], "foreground": [], "random": []}
    for image in images[501:521:2]:  # held-out cells with a spot: ALL
        cell = cell_mask(image)
        maps = {
            "gradcam": explainer.heatmap(image, "gradcam", class_index=1),
            "foreground": cell.astype(np.float32),
            "random": random_in_cell(cell, rng),
        }
        for name, saliency in maps.items():
            scores[name].append(explainer.road(image, saliency, 1, baseline=False)["combined"])
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    assert means["gradcam"] > means["foreground"] + 0.05 and means["gradcam"] > means["random"] + 0.05, means


def test_the_share_of_a_map_on_the_cell_tells_a_map_on_the_background_apart() -> None:
    from pipeline.explain.road import share_on_cell

    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 180  # the cell: a quarter of the frame
    on_cell = np.zeros((8, 8), np.float32)
    on_cell[3:5, 3:5] = 1.0
    assert share_on_cell(image, on_cell) == pytest.approx(1.0)
    background = np.zeros((8, 8), np.float32)
    background[0, :] = 1.0
    assert share_on_cell(image, background) < 0.05
    assert share_on_cell(image, np.ones((8, 8), np.float32)) == pytest.approx(0.25, abs=0.03)
    assert share_on_cell(image, np.zeros((8, 8), np.float32)) is None
