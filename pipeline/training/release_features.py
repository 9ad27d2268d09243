"""Pooled ImageNet features of a release's cells through one member backbone, under the release's preprocessing:
of the cells themselves and of one perturbed copy of each (`data.perturb`), and the cells' mean activation map at the
Grad-CAM layer (what the release's Grad-CAM is drawn against); cached, keyed by the images, the backbone's very
weights, the perturbation and this code's version."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from ..core.config import TrainConfig, default_cache_dir
from ..core.errors import PipelineError
from ..data.cache import cache_key, cached_array, load_images
from ..data.decode import read_image
from ..data.perturb import PERTURBATION_VERSION, perturbed_copy
from ..data.preprocess import preprocess
from ..inference.batches import extract_features, run_batches
from .features import FEATURE_CODE_VERSION


class MemberFeatures(NamedTuple):
    """What a release build needs of one member backbone."""

    features: np.ndarray
    """Pooled features of the cells, one row per cell."""
    copies: np.ndarray | None
    """Pooled features of one perturbed copy of each cell (None when copies were not asked for)."""
    weights: str
    """The backbone's weights label."""
    reference: np.ndarray | None
    """The cells' mean activation map at the Grad-CAM layer (height, width, channels); None when not asked for."""


def mean_map(model: Any, images: np.ndarray) -> np.ndarray:
    """The mean activation map of `images` at `LAST_CONV_LAYER` (the Grad-CAM layer) of `model`, summed batch by
    batch (the maps of every cell at once would take a gigabyte)."""
    import keras

    from ..models.model import LAST_CONV_LAYER, compiled_forward

    forward = compiled_forward(keras.Model(model.input, model.get_layer(LAST_CONV_LAYER).output))
    sums = run_batches(lambda batch: np.asarray(forward(batch)).sum(axis=0, keepdims=True), images)
    return (sums.sum(axis=0) / len(images)).astype(np.float32)


def _backbone(config: TrainConfig, paths: list[str]) -> tuple[Any, str, dict[str, Any]]:
    """The member's frozen ImageNet backbone, its weights label and the cache key its features share."""
    from ..models.model import backbone_fingerprint, build_model

    model, weights = build_model(config.backbone, config.image_size, "imagenet", freeze_backbone=True)
    key = {
        "images": cache_key(paths, config.image_size, config.clahe),
        "backbone": config.backbone,
        "weights": weights,
        "weights_sha256": backbone_fingerprint(model),
        "feature_code": FEATURE_CODE_VERSION,
    }
    return model, weights, key


def member_features(
    config: TrainConfig,
    paths: list[str],
    progress: Callable[[str], None],
    copies: bool = False,
    mean_activation: bool = True,
) -> MemberFeatures:
    """The pooled ImageNet features of `paths` under the release's preprocessing; with `copies`, those of one
    perturbed copy of each cell, seeded by the configuration's seed and the cell's row, so every build draws the same
    copies; the weights label; with `mean_activation`, the cells' mean map at the Grad-CAM layer. All cached; the
    backbone is built once."""
    model, weights, key = _backbone(config, paths)

    @cache
    def images() -> np.ndarray:
        progress(f"preprocessing {len(paths)} cells")
        found, failed = load_images(paths, config.image_size, config.clahe, default_cache_dir())
        if failed:
            first = next(iter(failed.items()))
            raise PipelineError(f"{len(failed)} cell(s) do not read (first: {first[0]}: {first[1]}).")
        return np.asarray(found)

    def cells() -> np.ndarray:
        batch = images()
        progress(f"features of {len(paths)} cells")
        return extract_features(model, batch)

    def reference() -> np.ndarray:
        batch = images()
        progress(f"mean activation map of {len(paths)} cells")
        return mean_map(model, batch)

    def copy(row: int) -> np.ndarray:
        return preprocess(perturbed_copy(read_image(paths[row]), config.seed, row), config.image_size, config.clahe)

    def perturbed() -> np.ndarray:
        progress(f"features of a perturbed copy of {len(paths)} cells")
        with ThreadPoolExecutor(max_workers=4) as pool:
            return extract_features(model, np.stack(list(pool.map(copy, range(len(paths))))))

    features, _ = cached_array("features", {**key, "kind": "release"}, cells, default_cache_dir())
    mean = (
        cached_array("mean-map", {**key, "kind": "release, mean activation map"}, reference, default_cache_dir())[0]
        if mean_activation
        else None
    )
    images.cache_clear()  # the cells' pictures are not needed for the copies
    copy_key = {**key, "kind": "release, perturbed copies", "perturbation": PERTURBATION_VERSION, "seed": config.seed}
    extra = cached_array("features", copy_key, perturbed, default_cache_dir())[0] if copies else None
    return MemberFeatures(features, extra, weights, mean)
