"""Pooled ImageNet features of a release's cells through one member backbone, under the release's preprocessing:
of the cells themselves and of one perturbed copy of each (`data.perturb`); cached, keyed by the images, the
backbone's very weights, the perturbation and this code's version."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core.config import TrainConfig, default_cache_dir
from ..core.errors import PipelineError
from ..data.cache import cache_key, cached_array, load_images
from ..data.decode import read_image
from ..data.perturb import PERTURBATION_VERSION, perturbed_copy
from ..data.preprocess import preprocess
from ..inference.batches import extract_features
from .features import FEATURE_CODE_VERSION


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
    config: TrainConfig, paths: list[str], progress: Callable[[str], None], copies: bool = False
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(pooled ImageNet features of `paths` under the release's preprocessing; with `copies`, those of one perturbed
    copy of each cell, seeded by the configuration's seed and the cell's row, so every build draws the same copies,
    else None; the weights label). Both cached; the backbone is built once for both."""
    model, weights, key = _backbone(config, paths)

    def cells() -> np.ndarray:
        progress(f"preprocessing {len(paths)} cells")
        images, failed = load_images(paths, config.image_size, config.clahe, default_cache_dir())
        if failed:
            first = next(iter(failed.items()))
            raise PipelineError(f"{len(failed)} cell(s) do not read (first: {first[0]}: {first[1]}).")
        progress(f"features of {len(paths)} cells")
        return extract_features(model, np.asarray(images))

    def copy(row: int) -> np.ndarray:
        return preprocess(perturbed_copy(read_image(paths[row]), config.seed, row), config.image_size, config.clahe)

    def perturbed() -> np.ndarray:
        progress(f"features of a perturbed copy of {len(paths)} cells")
        with ThreadPoolExecutor(max_workers=4) as pool:
            return extract_features(model, np.stack(list(pool.map(copy, range(len(paths))))))

    features, _ = cached_array("features", {**key, "kind": "release"}, cells, default_cache_dir())
    if not copies:
        return features, None, weights
    copy_key = {**key, "kind": "release, perturbed copies", "perturbation": PERTURBATION_VERSION, "seed": config.seed}
    return features, cached_array("features", copy_key, perturbed, default_cache_dir())[0], weights
