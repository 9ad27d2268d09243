import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.config import ClaheSettings
from pipeline.errors import ImageReadError
from pipeline.preprocess import decode_image, local_contrast, preprocess

NO_CLAHE = ClaheSettings(enabled=False)


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_clahe_raises_local_contrast_of_a_low_contrast_image() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (224, 224)).astype(np.float32), (0, 0), 3)
    gray = np.clip(100 + 4 * texture / texture.std(), 0, 255).astype(np.uint8)
    image = np.stack([gray, (gray * 0.5).astype(np.uint8), gray], axis=-1)
    enhanced = preprocess(image, 224, ClaheSettings(clip_limit=2.0, tile_grid=8))
    assert local_contrast(enhanced) > 2 * local_contrast(image)
    assert local_contrast(preprocess(image, 224, NO_CLAHE)) == pytest.approx(local_contrast(image), rel=0.01)


def test_preprocess_resizes_and_keeps_known_pixels() -> None:
    image = np.zeros((450, 450, 3), np.uint8)
    image[:, :, 0] = 200
    out = preprocess(image, 224, NO_CLAHE)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out[:, :, 0] == 200).all() and (out[:, :, 1:] == 0).all()


def test_gray_rgba_16bit_and_float_images_become_rgb_uint8() -> None:
    gray = np.full((30, 40), 100, np.uint8)
    assert (decode_image(_png(gray)) == 100).all()
    bgra = np.zeros((30, 30, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 255, 10, 255
    bgra[:10, :, 3] = 0
    rgb = decode_image(_png(bgra))
    assert rgb.shape == (30, 30, 3)
    assert rgb[20, 0].tolist() == [10, 0, 255] and rgb[0, 0].tolist() == [0, 0, 0]
    sixteen = np.full((20, 20), 65535, np.uint16)
    ok, tiff = cv2.imencode(".tif", sixteen)
    assert ok and (decode_image(tiff.tobytes()) == 255).all()
    tiny = decode_image(_png(np.full((8, 8, 3), 50, np.uint8)))
    assert preprocess(tiny, 64).shape == (64, 64, 3)


def _huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"hello, this is text", "not a BMP, PNG, JPEG or TIFF"),
    (_png(np.full((64, 64, 3), 9, np.uint8))[:60], "corrupt or truncated|not a BMP"),
    (_png(np.zeros((4, 4, 3), np.uint8)), "at least 8x8"),
    (_huge_png(), "megapixels are refused"),
], ids=["empty", "text", "truncated-png", "too-small", "10000x10000"])
def test_bad_images_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageReadError, match=message):
        decode_image(data, "upload")
