import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.core.config import ClaheSettings
from pipeline.core.errors import ImageReadError
from pipeline.data.decode import decode_image
from pipeline.data.preprocess import local_contrast, preprocess

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


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not a BMP, PNG, JPEG or TIFF"),
        (_png(np.full((64, 64, 3), 9, np.uint8))[:60], "corrupt or truncated|not a BMP"),
        (_png(np.zeros((4, 4, 3), np.uint8)), "at least 8x8"),
        (_huge_png(), "megapixels are refused"),
    ],
    ids=["empty", "text", "truncated-png", "too-small", "10000x10000"],
)
def test_bad_images_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageReadError, match=message):
        decode_image(data, "upload")


def _encode_png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return data.tobytes()


_MEASURE = """
import resource, sys
from pipeline.data.decode import decode_image
from pipeline.core.errors import ImageReadError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    shape, outcome = decode_image(data, "upload").shape, "decoded"
except ImageReadError as error:
    shape, outcome = None, str(error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, outcome, shape, sep="|")
"""


@pytest.mark.parametrize(
    ("shape", "dtype", "accepted"),
    [
        ((7000, 7000, 4), np.uint16, False),  # 394 KB of zeros, 392 MB decoded
        ((7000, 7000, 3), np.uint16, False),
        ((5000, 5000, 4), np.uint8, True),  # 100 MB decoded: the largest accepted
        ((4000, 4000), np.uint16, True),
    ],
    ids=["16bit-rgba-7000", "16bit-rgb-7000", "rgba-5000", "16bit-gray-4000"],
)
def test_no_single_image_raises_memory_by_more_than_300_mb(tmp_path, shape, dtype, accepted) -> None:
    import subprocess
    import sys

    path = tmp_path / "big.png"
    path.write_bytes(_encode_png(np.zeros(shape, dtype)))
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    grown_mb, outcome, decoded_shape = result.stdout.strip().split("|")
    assert (outcome == "decoded") == accepted, outcome
    if not accepted:
        assert "MB once decoded" in outcome
    else:
        assert max(eval(decoded_shape)[:2]) == 2048, "scaled down before the colour conversions"
    assert float(grown_mb) < 300, f"{shape} {np.dtype(dtype).name}: +{float(grown_mb):.0f} MB"


def test_formats_are_known_by_content_not_by_name() -> None:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 40), (120, 0, 120)).save(buffer, format="GIF")
    with pytest.raises(ImageReadError, match="not a BMP, PNG, JPEG or TIFF image"):
        decode_image(buffer.getvalue(), "cell.png")
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 40), (120, 0, 120)).save(buffer, format="WEBP")
    with pytest.raises(ImageReadError, match="its content says otherwise"):
        decode_image(buffer.getvalue(), "cell.jpg")
    assert decode_image(_png(np.full((20, 20, 3), 7, np.uint8)), "cell.gif").shape == (20, 20, 3)


def test_a_gif_in_a_data_set_is_skipped_like_any_unreadable_file(tmp_path) -> None:
    from PIL import Image as PILImage

    from pipeline.data.layouts import scan_dataset

    for label in ("all", "hem"):
        (tmp_path / label).mkdir()
        cv2.imwrite(str(tmp_path / label / "ok.png"), np.full((20, 20, 3), 90, np.uint8))
    PILImage.new("RGB", (20, 20)).save(tmp_path / "all" / "fake.png", format="GIF")
    dataset = scan_dataset(tmp_path)
    assert [Path(path).name for path, _ in dataset.skipped] == ["fake.png"]


def _marked_cell(height: int = 120, width: int = 80) -> np.ndarray:
    """A dark field with a bright block in its top-left corner: which way is up is plain."""
    image = np.full((height, width, 3), 30, np.uint8)
    image[5:35, 5:25] = (240, 200, 160)
    return image


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_jpeg_is_turned_the_way_its_exif_orientation_says_a_viewer_sees_it(orientation: int) -> None:
    upright = _marked_cell()
    stored = {
        3: cv2.rotate(upright, cv2.ROTATE_180),
        6: cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE),
        8: cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue(), "turned.jpg")
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).mean() < 3, "the bright block is back in the top-left corner"
    assert decode_image(_png(cv2.cvtColor(stored, cv2.COLOR_RGB2BGR))).shape == stored.shape, "no EXIF: as stored"


def test_a_wide_image_keeps_its_aspect_padded_with_its_background_not_stretched() -> None:
    wide = np.full((300, 450, 3), (12, 10, 14), np.uint8)
    cv2.circle(wide, (225, 150), 100, (200, 120, 180), thickness=-1)
    out = preprocess(wide, 90, NO_CLAHE)
    assert out.shape == (90, 90, 3)
    rows, cols = np.nonzero(out[:, :, 0] > 100)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(height - width) <= 1, "the round cell stays round"
    assert width == pytest.approx(90 * 200 / 450, abs=2)
    assert out[0, 0].tolist() == [12, 10, 14] and out[-1, 45].tolist() == [12, 10, 14], "padded with the background"


def test_12_bit_data_in_a_16_bit_tiff_comes_out_like_its_8_bit_original() -> None:
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    original[0, 0] = 255  # the brightest sample uses all 12 bits
    twelve_bit = (original.astype(np.int64) * 4095 // 255).astype(np.uint16)
    ok, tiff = cv2.imencode(".tif", twelve_bit)
    assert ok
    decoded = decode_image(tiff.tobytes(), "twelve.tif")
    assert np.abs(decoded.astype(int) - cv2.cvtColor(original, cv2.COLOR_BGR2RGB)).max() <= 1


def test_a_png_with_megabytes_of_text_metadata_is_read_and_a_bad_file_is_named_once() -> None:
    from PIL import PngImagePlugin

    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (180, 60, 90)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 18_000_000)
    info.add_text("Packed", "y" * 5_000_000, zip=True)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    assert len(buffer.getvalue()) > 18_000_000
    assert (decode_image(buffer.getvalue(), "annotated.png") == image).all()
    with pytest.raises(ImageReadError) as refused:
        decode_image(buffer.getvalue()[:200], "cut.png")
    assert str(refused.value).count("cut.png") == 1


@pytest.mark.parametrize("radius", [40, 70, 110])
def test_size_normalisation_gives_every_cell_the_same_area_and_keeps_its_colour(radius: int) -> None:
    from pipeline.data.preprocess import cell_mask

    image = np.zeros((450, 450, 3), np.uint8)
    cv2.circle(image, (200, 240), radius, (150, 80, 200), -1)
    settings = ClaheSettings(enabled=False, cell_area=0.15)
    out = preprocess(image, 224, settings)
    assert cell_mask(out).mean() == pytest.approx(0.15, abs=0.01), "whatever its size, the cell covers 15 %"
    assert np.abs(np.median(out[cell_mask(out)], axis=0) - (150, 80, 200)).max() <= 1, "only the size changes"
    as_imaged = cell_mask(preprocess(image, 224, ClaheSettings(enabled=False))).mean()
    assert as_imaged == pytest.approx(np.pi * radius**2 / 450**2, rel=0.05)


def test_size_normalisation_leaves_a_picture_that_is_not_a_cell_on_black_alone() -> None:
    photo = np.full((300, 300, 3), 180, np.uint8)
    cv2.circle(photo, (150, 150), 40, (20, 20, 20), -1)
    plain = preprocess(photo, 64, ClaheSettings(enabled=False))
    assert np.array_equal(preprocess(photo, 64, ClaheSettings(enabled=False, cell_area=0.15)), plain)
    with pytest.raises(Exception, match="cell_area"):
        ClaheSettings(cell_area=1.5)
