"""Reading images and the one preprocessing function used by training, evaluation and prediction."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import ClaheSettings
from .errors import ImageReadError

MAX_PIXELS = 50_000_000
"""Refuse to decode anything larger: a 10,000 x 10,000 upload would need 300 MB as RGB (a decompression bomb)."""

MIN_SIDE = 8


def _check_header(data: bytes, name: str) -> None:
    """Reject empty, non-image and oversized files before decoding any pixel."""
    if not data:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageReadError(f"{name} is not a BMP, PNG, JPEG or TIFF image.") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{name} is too large to process safely.") from error
    if width * height > MAX_PIXELS:
        raise ImageReadError(f"{name} is {width}x{height} pixels; images over {MAX_PIXELS // 1_000_000} "
                             f"megapixels are refused. Crop or downscale it to the cell first.")
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(f"{name} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        finite = np.nan_to_num(image.astype(np.float32))
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
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of any BMP/PNG/JPEG/TIFF (gray, RGBA, 16-bit, any size) as an RGB uint8 array."""
    _check_header(data, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageReadError(f"{name} could not be decoded ({error.msg.strip()}).") from error
    if image is None or image.size == 0:
        raise ImageReadError(f"{name} could not be decoded: the file is corrupt or truncated.")
    if image.dtype == np.uint16 and image.ndim == 3 and image.shape[2] == 4:
        image = image.astype(np.float32) / 65535.0
    return _to_rgb(_to_uint8(image))


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as RGB uint8; `ImageReadError` with the reason when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"{path} cannot be read ({error.strerror}).") from error
    return decode_image(data, path.name)


def apply_clahe(image: np.ndarray, clahe: ClaheSettings) -> np.ndarray:
    """Contrast-limited adaptive histogram equalization of the L channel of LAB (OpenCV)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    tile = max(1, int(clahe.tile_grid))
    equalizer = cv2.createCLAHE(clipLimit=float(clahe.clip_limit), tileGridSize=(tile, tile))
    lab[:, :, 0] = equalizer.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def preprocess(image: np.ndarray, size: int = 224, clahe: ClaheSettings | None = None) -> np.ndarray:
    """Resize to `size`x`size`, then CLAHE: RGB uint8 in, RGB uint8 out (the model takes it as 0-255 floats)."""
    clahe = clahe if clahe is not None else ClaheSettings()
    height, width = image.shape[:2]
    interpolation = cv2.INTER_AREA if min(height, width) >= size else cv2.INTER_CUBIC
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return apply_clahe(resized, clahe) if clahe.enabled else resized


def load_and_preprocess(path: str | Path, size: int = 224, clahe: ClaheSettings | None = None) -> np.ndarray:
    return preprocess(read_image(path), size, clahe)


def local_contrast(image: np.ndarray, window: int = 15) -> float:
    """Mean local standard deviation of the luminance: how much contrast CLAHE has to work with."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(gray, (window, window))
    mean_sq = cv2.blur(gray * gray, (window, window))
    return float(np.sqrt(np.maximum(mean_sq - mean * mean, 0)).mean())


def thumbnail(path: str | Path, size: int = 112) -> np.ndarray:
    """A small RGB preview of the image at `path` (no CLAHE)."""
    return preprocess(read_image(path), size, ClaheSettings(enabled=False))
