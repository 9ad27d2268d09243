"""How a released model tells what it does not know: the format check (one stained cell on a black background, of
a size it saw) and the distance of an input's features from the training cells' (probabilistic PCA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.preprocess import cell_mask

OOD_COMPONENTS = 64
"""Principal components of the training features the distance is measured in (the rest as one residual)."""
FORMAT_MARGIN = 1.5
"""How far past the training cells' 0.5-99.5 % range of cell area an input may go before it is "not a cell"."""


@dataclass(frozen=True)
class DistanceScore:
    """How far features lie from the training features: a probabilistic-PCA Mahalanobis distance (the top
    components by their variances, the rest by their mean variance), per dimension, so typical cells score ~1."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float

    @classmethod
    def fit(cls, features: np.ndarray, components: int = OOD_COMPONENTS) -> DistanceScore:
        """A distance score fitted on held-out features."""
        from sklearn.decomposition import PCA

        features = np.asarray(features, np.float64)
        keep = min(components, len(features) - 1, features.shape[1])
        pca = PCA(n_components=keep, svd_solver="full").fit(features)
        total = float(features.var(axis=0, ddof=1).sum())
        rest = max(features.shape[1] - keep, 1)
        residual = max((total - float(pca.explained_variance_.sum())) / rest, 1e-12)
        return cls(pca.mean_, pca.components_, np.maximum(pca.explained_variance_, 1e-12), residual)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """The distance of each row of features from the training cells."""
        centred = np.asarray(features, np.float64) - self.mean
        projected = centred @ self.components.T
        residual = (centred**2).sum(axis=1) - (projected**2).sum(axis=1)
        return ((projected**2 / self.variances).sum(axis=1) + np.maximum(residual, 0) / self.residual_variance) / (
            centred.shape[1]
        )


@dataclass(frozen=True)
class FormatCheck:
    """What a C-NMC picture looks like: one stained cell on a black background, square-ish, of a cell area the model
    saw (with a margin)."""

    area_low: float
    area_high: float
    largest_share: float
    aspect_low: float = 0.8
    aspect_high: float = 1.25

    @classmethod
    def of(cls, areas: np.ndarray, largest: np.ndarray) -> FormatCheck:
        """The format check's ranges from the training cells' areas and largest-part shares."""
        low, high = np.quantile(areas, [0.005, 0.995])
        return cls(
            float(low / FORMAT_MARGIN),
            float(min(high * FORMAT_MARGIN, 0.95)),
            float(min(np.quantile(largest, 0.005), 0.9)),
        )

    def problem(self, image: np.ndarray) -> str | None:
        """Why `image` (RGB) is not a picture of the kind the model knows, in plain words; None when it is."""
        height, width = image.shape[:2]
        if not self.aspect_low <= width / height <= self.aspect_high:
            return f"its shape ({width}x{height}) is not the square crop of one cell the model was trained on"
        area, largest = cell_shape(image)
        if area == 0:
            return "no cell in it: the whole picture is dark background"
        if area < self.area_low:
            return f"the stained area ({area:.1%} of the picture) is smaller than any cell the model saw"
        if area > self.area_high:
            return (
                f"it has no dark background around a cell (stained area {area:.0%} of the picture): the model "
                "knows single cells segmented on black"
            )
        if largest < self.largest_share:
            return "it holds several separate objects, not one cell"
        return None


def cell_shape(image: np.ndarray) -> tuple[float, float]:
    """The cell's share of the picture and the share of it its largest connected part holds."""
    import cv2

    mask = cell_mask(image)
    if not mask.any():
        return 0.0, 0.0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = stats[1:, cv2.CC_STAT_AREA].max() if count > 1 else 0
    return float(mask.mean()), float(largest / mask.sum())
