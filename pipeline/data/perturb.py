"""Class-independent perturbations of a segmented cell, for training copies of frozen-feature models: any rotation
and flip (a cell has no up or left), a stain jitter (patients' smears differ in staining) and a random defocus
(microscopes and slides differ in focus). Every cell gets the same kind of change whatever its class, so no
perturbation can teach a class's size, colour or sharpness; the nested cross-validation's stresses measure what
they buy."""

from __future__ import annotations

import cv2
import numpy as np

from .preprocess import cell_mask

BLUR_SIGMA_RANGE = (0.0, 2.5)
"""Defocus: a Gaussian blur of this sigma (pixels of the 450 px original), uniform; the blur stress uses 2."""
CHANNEL_GAIN_RANGE = (0.9, 1.1)
"""Stain jitter: each colour channel of the cell scaled by its own factor, uniform."""
BRIGHTNESS_GAIN_RANGE = (0.85, 1.15)
"""Illumination: the whole cell scaled by one factor, uniform."""
PERTURBATION_VERSION = 1
"""Part of a cache key: bump when a perturbation or its range changes."""


def perturb_cell(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`image` (RGB uint8, one cell on black) rotated by a random angle about its centre, flipped half of the time,
    its stain and illumination jittered on the cell's pixels and blurred by a random sigma; the background stays
    black and the cell keeps its size."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.uniform(0.0, 360.0)), 1.0)
    out = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    if rng.random() < 0.5:
        out = out[:, ::-1]
    mask = cell_mask(out)
    gain = rng.uniform(*CHANNEL_GAIN_RANGE, 3) * rng.uniform(*BRIGHTNESS_GAIN_RANGE)
    jittered = out.astype(np.float32)
    jittered[mask] *= gain.astype(np.float32)
    out = np.clip(jittered, 0, 255).astype(np.uint8)
    sigma = float(rng.uniform(*BLUR_SIGMA_RANGE))
    return np.ascontiguousarray(cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0.05 else out)


def perturbed_copy(image: np.ndarray, seed: int, row: int) -> np.ndarray:
    """The perturbed copy of the cell in row `row` of a data set: the same copy every time for the same seed and
    row, another for another row."""
    return perturb_cell(image, np.random.default_rng([seed, row]))
