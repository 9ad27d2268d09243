"""Reading images and the one preprocessing function used by training, evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..core.config import ClaheSettings
from .decode import read_image


def apply_clahe(image: np.ndarray, clahe: ClaheSettings) -> np.ndarray:
    """Contrast-limited adaptive histogram equalization of the L channel of LAB (OpenCV)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    tile = max(1, int(clahe.tile_grid))
    equalizer = cv2.createCLAHE(clipLimit=float(clahe.clip_limit), tileGridSize=(tile, tile))
    lab[:, :, 0] = equalizer.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """A non-square image centred on a square of its background (the median colour of its border), so resizing
    keeps a round cell round; a square image is returned as it is."""
    height, width = image.shape[:2]
    if height == width:
        return image
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = [int(value) for value in np.median(border, axis=0)]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(
        image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=background
    )


BACKGROUND_LEVEL = 20
"""A pixel belongs to the cell when its brightest channel exceeds this (C-NMC cells are segmented on black)."""
NORMALISE_MAX_AREA = 0.6
"""Size normalisation leaves alone a picture whose "cell" covers more than this share: not one cell on black."""


def cell_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the segmented cell (pixels brighter than the black background)."""
    return image.max(axis=2) > BACKGROUND_LEVEL


def zoom_cell(image: np.ndarray, factor: float) -> np.ndarray:
    """The image with its cell scaled by `factor` about the cell's centre, on the same black canvas."""
    mask = cell_mask(image)
    rows, columns = np.nonzero(mask)
    centre = (float(columns.mean()), float(rows.mean())) if len(rows) else (image.shape[1] / 2, image.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, 0.0, factor)
    return cv2.warpAffine(
        image,
        matrix,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def zoom_to_area(image: np.ndarray, area: float) -> np.ndarray:
    """The cell zoomed so that it covers `area` (a share of the image), as far as the canvas allows; an image
    without a cell is returned as it is."""
    current = cell_mask(image).mean()
    return zoom_cell(image, float(np.sqrt(area / current))) if current > 0 else image


def preprocess(image: np.ndarray, size: int = 224, clahe: ClaheSettings | None = None) -> np.ndarray:
    """Pad to a square of the background, zoom the cell to `clahe.cell_area` when set (size normalisation),
    resize to `size`x`size`, then CLAHE: RGB uint8 in, RGB uint8 out (the model takes it as 0-255 floats)."""
    clahe = clahe if clahe is not None else ClaheSettings()
    image = pad_to_square(image)
    if clahe.cell_area and cell_mask(image).mean() <= NORMALISE_MAX_AREA:
        image = zoom_to_area(image, clahe.cell_area)
    height, width = image.shape[:2]
    interpolation = cv2.INTER_AREA if min(height, width) >= size else cv2.INTER_CUBIC
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return apply_clahe(resized, clahe) if clahe.enabled else resized


def load_and_preprocess(path: str | Path, size: int = 224, clahe: ClaheSettings | None = None) -> np.ndarray:
    """Read an image file and preprocess it for the model."""
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
