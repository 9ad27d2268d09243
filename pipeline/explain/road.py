"""ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022):
remove pixels in the order a map ranks them, fill them by noisy linear imputation (each removed pixel the
weighted mean of its 8 neighbours, plus a little noise, so the filling carries no trace of the mask's shape),
and watch the class probability. Most relevant first (MoRF) should make it fall, least relevant first (LeRF)
should not; the combined score, mean over fractions of (LeRF change - MoRF change) / 2, is higher for a
more faithful map (as pytorch-grad-cam's `ROADCombined`).

Against a baseline that tells something here: random maps drawn inside the cell. A segmented cell covers about
a fifth of the frame, so any map lying on the cell, a plain foreground mask included, beats random pixels of
the whole frame; only a map that ranks the cell's own pixels well beats random pixels of the cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Shares of pixels removed (pytorch-grad-cam's percentiles 10-90)."""
QUICK_FRACTIONS = FRACTIONS[::2]
"""Every other share (10, 30, 50, 70, 90 %): what the Predict page measures while a visitor waits."""
NOISE = 0.01 * 255
"""Standard deviation of the noise added to imputed values (1 % of the 0-255 range)."""
RANDOM_MAPS = 3
_NEIGHBOURS = [
    ((-1, -1), 1 / 12),
    ((-1, 0), 1 / 6),
    ((-1, 1), 1 / 12),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((1, 1), 1 / 12),
]


def noisy_linear_impute(
    image: np.ndarray, removed: np.ndarray, rng: np.random.Generator, noise: float = NOISE
) -> np.ndarray:
    """`image` (H, W, C floats) with the `removed` pixels (H, W bool) replaced: each equals the weighted mean of
    its neighbours (edge pixels: of those that exist), solved as one sparse linear system, plus Gaussian noise."""
    height, width = removed.shape
    flat_removed = removed.ravel()
    unknown = np.flatnonzero(flat_removed)
    if not len(unknown):
        return image.copy()
    index_of = np.full(height * width, -1)
    index_of[unknown] = np.arange(len(unknown))
    rows, columns = np.divmod(unknown, width)
    values = image.reshape(-1, image.shape[-1]).astype(np.float64)
    right_side = np.zeros((len(unknown), image.shape[-1]))
    total = np.zeros(len(unknown))
    a_rows, a_columns, a_values = [np.arange(len(unknown))], [np.arange(len(unknown))], []
    for (dy, dx), weight in _NEIGHBOURS:
        y, x = rows + dy, columns + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        neighbour = np.where(inside, y * width + x, 0)
        total += weight * inside
        known = inside & ~flat_removed[neighbour]
        right_side[known] += weight * values[neighbour[known]]
        free = inside & flat_removed[neighbour]
        a_rows.append(np.flatnonzero(free))
        a_columns.append(index_of[neighbour[free]])
        a_values.append(np.full(free.sum(), -weight))
    system = coo_matrix(
        (np.concatenate([total, *a_values]), (np.concatenate(a_rows), np.concatenate(a_columns))),
        shape=(len(unknown), len(unknown)),
    ).tocsc()
    solution = spsolve(system, right_side).reshape(len(unknown), -1)
    filled = values.copy()
    filled[unknown] = solution + rng.normal(0.0, noise, solution.shape)
    return np.clip(filled, 0, 255).reshape(image.shape).astype(np.float32)


def _ranking(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices from most to least relevant; ties (a flat map) broken at random, not by position."""
    jitter = rng.random(saliency.size) * 1e-6
    return np.argsort(-(saliency.ravel().astype(np.float64) + jitter), kind="stable")


def road(
    image: np.ndarray,
    saliency: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """MoRF and LeRF changes of `score` (a batch of images -> the target class's probability) when each
    share of pixels is removed and imputed, and the combined ROAD score."""
    rng = np.random.default_rng(seed)
    order = _ranking(saliency, rng)
    batch = []
    for fraction in fractions:
        count = int(round(fraction * saliency.size))
        for chosen in (order[:count], order[::-1][:count]):  # most relevant first, then least relevant first
            removed = np.zeros(saliency.size, dtype=bool)
            removed[chosen] = True
            batch.append(noisy_linear_impute(image, removed.reshape(saliency.shape), rng))
    original = float(score(np.asarray(image, np.float32)[None])[0])
    after = np.asarray(score(np.stack(batch)), dtype=float).reshape(len(fractions), 2)
    morf, lerf = after[:, 0] - original, after[:, 1] - original
    return {
        "fractions": list(fractions),
        "original": original,
        "morf": morf.round(6).tolist(),
        "lerf": lerf.round(6).tolist(),
        "combined": float(np.mean((lerf - morf) / 2)),
    }


def cell_mask(model_input: np.ndarray, threshold: int = 30) -> np.ndarray:
    """The segmented cell in a model input: everything brighter than the (CLAHE-lifted) black background,
    holes closed."""
    mask = (np.asarray(model_input).max(axis=2) > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)


def share_on_cell(model_input: np.ndarray, heatmap: np.ndarray) -> float | None:
    """The share of a map's weight that falls on the cell (0-1), so a map that looks at the background shows it;
    None for a map without weight."""
    cell = cell_mask(model_input)
    heat = np.clip(cv2.resize(np.asarray(heatmap, np.float32), (cell.shape[1], cell.shape[0])), 0, None)
    total = float(heat.sum())
    return None if total <= 0 else float(heat[cell].sum() / total)


def random_in_cell(cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random map that lies on the cell: uniform values inside it, zero outside."""
    return np.where(cell, rng.random(cell.shape), 0.0).astype(np.float32)


def road_with_baseline(
    image: np.ndarray,
    saliency: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    random_maps: int = RANDOM_MAPS,
) -> dict[str, Any]:
    """ROAD of `saliency` and, beside it, the mean ROAD of `random_maps` random maps inside the cell."""
    rng = np.random.default_rng(seed)
    cell = cell_mask(image)
    result = road(image, saliency, score, fractions, seed)
    baseline = [
        road(image, random_in_cell(cell, rng), score, fractions, seed + 1 + index)["combined"]
        for index in range(random_maps)
    ]
    result["random_in_cell"] = float(np.mean(baseline))
    result["cell_share"] = float(cell.mean())
    return result
