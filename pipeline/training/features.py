"""Pooled backbone features of a run's images, computed once and cached (keyed by the images, their preprocessing,
the backbone's very weights and this code's version), and a frozen model's probabilities from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ALL_INDEX
from ..core.config import TrainConfig, default_cache_dir
from ..data.cache import cache_key, cached_array
from ..data.datasets import PreparedData, make_dataset
from ..inference.batches import PREDICT_BATCH, dihedral_views, extract_features
from ..models.model import backbone_fingerprint, feature_extractor, head_model

Report = Callable[..., None]
"""Status changes as keyword arguments (`report(phase=..., progress=...)`): the caller's `FitHooks.report`."""


def _augmented_features(
    model: Any, config: TrainConfig, images: np.ndarray, labels: np.ndarray, report: Report
) -> np.ndarray:
    """Pooled features of `augment_passes` augmented copies of `images`, one pass after another."""

    extractor = feature_extractor(model)
    parts = []
    for index in range(config.augment_passes):
        report(phase=f"extracting augmented features ({index + 1}/{config.augment_passes})", progress=0.0)
        batches = make_dataset(
            images, labels, PREDICT_BATCH, False, config.seed + index, augment=True, strength=config.augment_strength
        )
        parts.extend(np.asarray(extractor(batch, training=False)) for batch, _ in batches)
    return np.concatenate(parts)


def dataset_features(
    model: Any, config: TrainConfig, data: PreparedData, report: Report, weights_used: str, kind: str = "plain"
) -> np.ndarray:
    """Pooled backbone features of every image of the run, in the split's order (see `image_features`), keyed
    by all the run's images, so the folds and repeats of a cross-validation share one extraction."""
    return image_features(model, config, report, weights_used, data.split["path"].tolist(), data.all_images, kind)


FEATURE_CODE_VERSION = 2
"""Changes whenever the code that computes features changes what it computes (pooling, views, augmentation), so
no feature cached by older code is read as if new. 2: the key holds the backbone's weights fingerprint."""


def feature_cache_key(
    model: Any, config: TrainConfig, weights_used: str, paths: list[str], kind: str
) -> dict[str, Any]:
    """What cached features depend on: the images and their preprocessing, the backbone and the very weights it
    holds (their fingerprint, not only their label), the kind of features and the feature code's version."""
    key = {
        "images": cache_key(paths, config.image_size, config.clahe),
        "backbone": config.backbone,
        "weights": weights_used,
        "weights_sha256": backbone_fingerprint(model),
        "kind": kind,
        "feature_code": FEATURE_CODE_VERSION,
    }
    if kind == "augmented":
        key.update(augment_passes=config.augment_passes, seed=config.seed)
        if config.augment_strength != "standard":  # the keys of standard passes cached before the setting stay valid
            key["augment_strength"] = config.augment_strength
    return key


def image_features(
    model: Any,
    config: TrainConfig,
    report: Report,
    weights_used: str,
    paths: list[str],
    images_of: Callable[[], np.ndarray],
    kind: str = "plain",
) -> np.ndarray:
    """Pooled backbone features of the images of `paths` (`images_of()` gives them, asked only when the cache
    has not): `plain`, `augmented` (the `augment_passes` passes one after another) or `views` (the 8 dihedral
    views of test-time augmentation, one after another). Cached when the backbone weights are fixed (ImageNet
    or a file); random weights change with every build and are computed afresh."""

    report(phase=f"extracting {kind} features of {len(paths)} images", progress=0.0)

    def compute() -> np.ndarray:
        images = images_of()
        if kind == "augmented":
            return _augmented_features(model, config, images, np.zeros(len(images), np.int32), report)
        if kind == "views":
            return np.concatenate([extract_features(model, view) for view in dihedral_views(images)])
        return extract_features(model, images, lambda fraction: report(progress=round(fraction, 4)))

    if weights_used.startswith("none"):
        return compute()
    key = feature_cache_key(model, config, weights_used, paths, kind)
    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features


def frozen_probabilities(
    model: Any, config: TrainConfig, data: PreparedData, report: Report, weights_used: str, subset: str
) -> np.ndarray:
    """P(ALL) of a subset for a fast-mode model whose backbone never trained: its head on the cached features
    (of the 8 views, averaged as test-time augmentation averages them), the same figures as the whole model
    on the images. The folds of a cross-validation share one extraction of every image's views; a single run
    extracts the views of its validation and test images only."""

    mask = data.subset_mask(subset)
    if not config.tta:
        inputs = dataset_features(model, config, data, report, weights_used)[mask]
    elif config.cv_folds:
        views = dataset_features(model, config, data, report, weights_used, "views").reshape(8, len(mask), -1)
        inputs = views[:, mask].reshape(-1, views.shape[-1])
    else:
        inputs = image_features(
            model, config, report, weights_used, data.paths(subset), lambda: data.images[subset], "views"
        )
    probabilities = np.asarray(head_model(model).predict(inputs, batch_size=1024, verbose=0))
    if config.tta:
        probabilities = probabilities.reshape(8, mask.sum(), -1).mean(axis=0)
    return probabilities[:, ALL_INDEX]
