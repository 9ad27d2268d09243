"""Decoding image files safely: formats by their first bytes, sizes and bit depths checked before the pixels are
decoded, orientation, 8-bit RGB out; anything else is an ImageReadError naming the file."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.errors import ImageReadError

TIFF_SAMPLE_FORMAT, TIFF_FLOAT = 339, 3
"""The TIFF tag that says how samples are stored, and its value for IEEE floating point."""
MAX_PIXELS = 50_000_000
"""Refuse to decode anything larger: a 10,000 x 10,000 upload would need 300 MB as RGB (a decompression bomb)."""


MAX_DECODED_BYTES = 100_000_000
"""Refuse to decode an image whose pixels would take more memory than this, counting its channels and bit depth:
a 7,000 x 7,000 16-bit RGBA PNG of zeros is 394 KB as a file and 392 MB decoded."""


MAX_WORKING_SIDE = 2048
"""A larger decoded image is scaled down (INTER_AREA) before any other copy is made: the model sees 600 px at most."""


MIN_SIDE = 8


FORMATS = {
    "BMP": (b"BM",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}
"""The accepted formats, known by their first bytes (the same test for uploads and for data sets)."""


ACCEPTED = "BMP, PNG, JPEG or TIFF"


def image_format(head: bytes) -> str | None:
    """The accepted format a file's first bytes announce, else None (GIF, WebP, text... whatever the suffix)."""
    return next((name for name, magics in FORMATS.items() if head.startswith(magics)), None)


def _decoded_bytes(header: Image.Image, data: bytes, image_format_name: str) -> int:
    """Memory the decoded pixels will take, from the header alone: channels x bytes per sample x pixels."""
    width, height = header.size
    channels, sample_bytes = len(header.getbands()), 1
    if image_format_name == "PNG" and data[12:16] == b"IHDR":
        bit_depth, color_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 4)
        sample_bytes = 2 if bit_depth == 16 else 1
    elif image_format_name == "TIFF":
        bits = header.tag_v2.get(258, (8,))
        sample_bytes = max(1, max(bits if isinstance(bits, tuple) else (bits,)) // 8)
        channels = int(header.tag_v2.get(277, channels))
    elif header.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        sample_bytes = 2 if header.mode.startswith("I;16") else 4
    return width * height * max(channels, 3) * sample_bytes


PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
"""Metadata a PNG may carry in any amount; no pixel depends on it, so it is dropped before decoding (an 18 MB text
chunk or a zlib bomb in one then costs nothing)."""


HIGH_BIT_DEPTHS = (8, 10, 12, 14, 16)
"""The sample depths a 16-bit container may hold: the data is scaled by the smallest that holds its largest value,
so 12-bit microscope data comes out like its 8-bit original, not 16 times darker."""


EXIF_ORIENTATION = 0x0112


_ORIENT = {
    2: (None, 1),
    3: (cv2.ROTATE_180, None),
    4: (None, 0),
    5: (cv2.ROTATE_90_CLOCKWISE, 1),
    6: (cv2.ROTATE_90_CLOCKWISE, None),
    7: (cv2.ROTATE_90_COUNTERCLOCKWISE, 1),
    8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}
"""EXIF orientation -> (rotation, then flip code) that shows the stored pixels as a viewer sees them."""


@dataclass(frozen=True)
class _Header:
    orientation: int = 1


def _without_png_text(data: bytes) -> bytes:
    """The PNG without its text chunks; the bytes unchanged if its chunk structure cannot be walked."""
    kept, position = [data[:8]], 8
    while position + 12 <= len(data):
        length = struct.unpack(">I", data[position : position + 4])[0]
        end = position + 12 + length
        if end > len(data):
            return data
        if data[position + 4 : position + 8] not in PNG_TEXT_CHUNKS:
            kept.append(data[position:end])
        position = end
    return b"".join(kept) if position == len(data) else data


def _tiff_sample_format(data: bytes) -> int | None:
    """The SampleFormat tag of a TIFF's first image (1 unsigned, 2 signed, 3 float), None when absent or
    unreadable: enough to name why Pillow cannot open a float TIFF."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    try:
        offset = struct.unpack(order + "I", data[4:8])[0]
        (entries,) = struct.unpack(order + "H", data[offset : offset + 2])
        for index in range(entries):
            start = offset + 2 + 12 * index
            tag, kind, count, value = struct.unpack(order + "HHI4s", data[start : start + 12])
            if tag == TIFF_SAMPLE_FORMAT:
                width = 2 if kind == 3 else 4  # SHORT or LONG; one value per sample, the first is enough
                if count * width > 4:  # the values do not fit in the entry: it holds their offset
                    (at,) = struct.unpack(order + "I", value)
                    value = data[at : at + width]
                return struct.unpack(order + ("H" if width == 2 else "I"), value[:width])[0]
    except struct.error:
        return None
    return None


def _check_header(data: bytes, name: str) -> _Header:
    """Reject empty, non-image, other-format and oversized files before decoding any pixel; the EXIF orientation."""
    if not data:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    found = image_format(data[:8])
    if found is None:
        raise ImageReadError(f"{name} is not a {ACCEPTED} image (its content says otherwise, whatever its name).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                decoded = _decoded_bytes(header, data, found)
                orientation = int(header.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if found == "TIFF" and _tiff_sample_format(data) == TIFF_FLOAT:
            raise ImageReadError(
                f"{name} holds floating-point samples: 32-bit float images are not supported; "
                "save it as an 8- or 16-bit image."
            ) from error
        raise ImageReadError(f"{name} could not be decoded: the file is corrupt or truncated.") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{name} is too large to process safely.") from error
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"{name} is {width}x{height} pixels; images over {MAX_PIXELS // 1_000_000} "
            f"megapixels are refused. Crop or downscale it to the cell first."
        )
    if decoded > MAX_DECODED_BYTES:
        raise ImageReadError(
            f"{name} would take {decoded / 1e6:.0f} MB once decoded ({width}x{height} pixels at "
            f"its bit depth and channels); over {MAX_DECODED_BYTES // 1_000_000} MB is refused. "
            f"Crop it to the cell or save it as 8-bit."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(f"{name} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")
    return _Header(orientation=orientation if orientation in _ORIENT else 1)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit samples without a float copy of the whole image (16-bit: one table lookup, scaled by the bits used)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        largest = int(image.max(initial=0))
        bits = next(depth for depth in HIGH_BIT_DEPTHS if largest < 2**depth)
        table = np.minimum(np.round(np.arange(65536) * (255.0 / (2**bits - 1))), 255).astype(np.uint8)
        return table[image]  # one lookup pass, exact rounding, no float copy of the image
    if np.issubdtype(image.dtype, np.floating):
        finite = np.nan_to_num(image, copy=False)
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(finite * scale, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR, BGRA or gray as RGB; transparency is composited onto black like a segmented cell."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 4:
        alpha = np.ascontiguousarray(image[:, :, 3])
        composited = [
            cv2.multiply(np.ascontiguousarray(image[:, :, index]), alpha, scale=1 / 255.0) for index in (2, 1, 0)
        ]
        return cv2.merge(composited)
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2RGB)


def _shrink(image: np.ndarray) -> np.ndarray:
    """Scale a very large image down before the colour conversions copy it."""
    height, width = image.shape[:2]
    if max(height, width) <= MAX_WORKING_SIDE:
        return image
    scale = MAX_WORKING_SIDE / max(height, width)
    return cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    rotation, flip = _ORIENT.get(orientation, (None, None))
    if rotation is not None:
        image = cv2.rotate(image, rotation)
    return image if flip is None else cv2.flip(image, flip)


def quiet_opencv() -> None:
    """Silence OpenCV's own decoder messages (they name no file): every image that does not read is reported by
    the pipeline with its name and reason. Called by the entry points (command line, dashboard), not on import."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of a BMP/PNG/JPEG/TIFF (gray, RGBA, 16-bit, any size within the limits) as an RGB uint8 array,
    turned the way its EXIF orientation says a viewer sees it."""
    if image_format(data[:8]) == "PNG":
        data = _without_png_text(data)
    header = _check_header(data, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageReadError(f"{name} could not be decoded ({error.msg.strip()}).") from error
    if image is None or image.size == 0:
        raise ImageReadError(f"{name} could not be decoded: the file is corrupt or truncated.")
    return _orient(_to_rgb(_to_uint8(_shrink(image))), header.orientation)


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as RGB uint8; `ImageReadError` with the reason when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"{path} cannot be read ({error.strerror}).") from error
    return decode_image(data, path.name)
