"""Input pipelines and augmentation on real cells: labels kept, values in range, the 8 views of TTA, and
BatchNorm statistics that keep up when training from random weights."""

import numpy as np
import pytest

from pipeline.core.config import EMBEDDED_SAMPLE, ClaheSettings
from pipeline.data.layouts import scan_dataset
from pipeline.data.preprocess import load_and_preprocess
from pipeline.inference.batches import averaged_over_views, dihedral_views, predict_probabilities
from tests.helpers import TINY_BACKBONE

pytestmark = pytest.mark.slow  # TensorFlow


@pytest.fixture(scope="module")
def real_cells() -> tuple[np.ndarray, np.ndarray]:
    """24 real cells of the embedded sample at 64 px (CLAHE), half ALL, half HEM."""
    records = scan_dataset(EMBEDDED_SAMPLE).labelled
    chosen = [r for r in records if r.label == "ALL"][::20][:12] + [r for r in records if r.label == "HEM"][::17][:12]
    images = np.stack([load_and_preprocess(r.path, 64, ClaheSettings()) for r in chosen])
    return images, np.array([int(r.label == "ALL") for r in chosen], np.int32)


def test_augmentation_keeps_labels_shape_and_value_range_and_changes_the_cells(real_cells) -> None:
    from pipeline.data.datasets import make_dataset

    images, labels = real_cells
    batches = list(make_dataset(images, labels, 8, shuffle=False, seed=0, augment=True))
    augmented = np.concatenate([np.asarray(x) for x, _ in batches])
    assert np.array_equal(np.concatenate([np.asarray(y) for _, y in batches]), labels)
    assert augmented.shape == images.shape and augmented.dtype == np.float32
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert np.abs(augmented - images).mean() > 5, "the cells were changed"
    corners = augmented[:, :4, :4].mean()
    assert corners < 20, "the black background stays dark (shift pads with black)"
    plain = np.concatenate([np.asarray(x) for x, _ in make_dataset(images, labels, 8, False, 0)])
    assert np.array_equal(plain, images.astype(np.float32))


def test_tta_averages_the_eight_flips_and_rotations() -> None:
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (3, 5, 5, 3)).astype(np.float32)
    views = dihedral_views(batch)
    assert len(views) == 8
    assert len({view[0].tobytes() for view in views}) == 8, "eight different views of an asymmetric image"
    assert all(np.array_equal(view, batch) for view in views[:1])

    def forward(images: np.ndarray) -> np.ndarray:  # a "model" that is not invariant: P(ALL) = top-left pixel
        p = images[:, 0, 0, 0] / 255.0
        return np.stack([1 - p, p], axis=1)

    expected = np.mean([forward(view) for view in views], axis=0)
    assert np.allclose(averaged_over_views(forward, batch), expected)
    corners = [batch[:, 0, 0, 0], batch[:, 0, -1, 0], batch[:, -1, 0, 0], batch[:, -1, -1, 0]]
    assert np.allclose(averaged_over_views(forward, batch)[:, 1], np.mean(corners, axis=0) / 255.0)


def test_predict_probabilities_with_tta_is_invariant_to_flipping_the_input(real_cells) -> None:
    import keras

    from pipeline.models.model import build_model

    keras.utils.set_random_seed(0)  # one random model every run: an unlucky draw can saturate every output
    model, _ = build_model("efficientnet_b0", 64, "none")  # Lite0's random features barely see a flip
    kernel, bias = model.get_layer("head_dense").get_weights()
    model.get_layer("head_dense").set_weights([np.random.default_rng(0).normal(0, 3e5, kernel.shape), bias])
    images = real_cells[0][:4].astype(np.float32)
    straight = predict_probabilities(model, images, tta=True)
    flipped = predict_probabilities(model, images[:, :, ::-1].copy(), tta=True)
    assert np.allclose(straight, flipped, atol=1e-5)
    assert not np.allclose(
        predict_probabilities(model, images), predict_probabilities(model, images[:, ::-1].copy()), atol=1e-4
    ), "without TTA the (random) model does see the flip"


def test_batchnorm_statistics_keep_up_after_one_epoch_from_random_weights(real_cells) -> None:
    import keras

    from pipeline.data.datasets import make_dataset
    from pipeline.models.model import build_model

    images, labels = real_cells
    train = make_dataset(np.tile(images, (2, 1, 1, 1)), np.tile(labels, 2), 4, True, 0, drop_remainder=True)
    gaps = {}
    for momentum in (0.9, 0.0):
        keras.utils.set_random_seed(0)
        model, _ = build_model(TINY_BACKBONE, 64, "none", bn_momentum=momentum)
        # eagerly: 12 steps run sooner than a training step traces (16 s against 23 s here); the statistics are the same
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True)
        model.fit(train, epochs=1, verbose=0)  # 12 steps
        stem = keras.Model(model.input, model.get_layer("stem_conv").output)
        actual = np.asarray(stem(images.astype(np.float32))).mean(axis=(0, 1, 2))
        moving = np.asarray(model.get_layer("stem_bn").moving_mean)
        gaps[momentum] = np.abs(moving - actual).mean() / (np.abs(actual).mean() + 1e-6)
    assert gaps[0.9] < 0.35, f"momentum 0.9: moving mean {gaps[0.9]:.2f} off the training statistics"
    assert gaps[0.0] > 2 * gaps[0.9], "Keras' default 0.99 lags far behind after one epoch"


def test_training_batches_are_whole_so_batchnorm_never_sees_one_image() -> None:
    from pipeline.data.datasets import make_dataset, training_steps

    assert training_steps(2257, 16) == (141, True)
    assert training_steps(5, 16) == (1, False)
    images = np.zeros((17, 8, 8, 3), np.uint8)
    batches = [len(x) for x, _ in make_dataset(images, np.zeros(17, np.int32), 16, True, 0, drop_remainder=True)]
    assert batches == [16]
