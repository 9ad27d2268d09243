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


def _backbone(config: TrainConfig, paths: list[str], kind: str) -> tuple[Any, str, dict[str, Any]]:
    """The member's frozen ImageNet backbone, its weights label and the cache key of its `kind` of features."""
    from ..models.model import backbone_fingerprint, build_model

    model, weights = build_model(config.backbone, config.image_size, "imagenet", freeze_backbone=True)
    key = {
        "images": cache_key(paths, config.image_size, config.clahe),
        "backbone": config.backbone,
        "weights": weights,
        "weights_sha256": backbone_fingerprint(model),
        "kind": kind,
        "feature_code": FEATURE_CODE_VERSION,
    }
    return model, weights, key


def cell_features(config: TrainConfig, paths: list[str], progress: Callable[[str], None]) -> tuple[np.ndarray, str]:
    """Pooled ImageNet features of `paths` under the release's preprocessing (cached), and the weights label."""
    model, weights, key = _backbone(config, paths, "release")

    def compute() -> np.ndarray:
        progress(f"preprocessing {len(paths)} cells")
        images, failed = load_images(paths, config.image_size, config.clahe, default_cache_dir())
        if failed:
            first = next(iter(failed.items()))
            raise PipelineError(f"{len(failed)} cell(s) do not read (first: {first[0]}: {first[1]}).")
        progress(f"features of {len(paths)} cells")
        return extract_features(model, np.asarray(images))

    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features, weights


def perturbed_features(config: TrainConfig, paths: list[str], progress: Callable[[str], None]) -> np.ndarray:
    """Pooled ImageNet features of one perturbed copy of each cell of `paths` (seeded by the configuration's seed
    and the cell's row: the same copies on every build), under the release's preprocessing; cached."""
    model, _, key = _backbone(config, paths, "release, perturbed copies")
    key.update(perturbation=PERTURBATION_VERSION, seed=config.seed)

    def copy(row: int) -> np.ndarray:
        return preprocess(perturbed_copy(read_image(paths[row]), config.seed, row), config.image_size, config.clahe)

    def compute() -> np.ndarray:
        progress(f"features of a perturbed copy of {len(paths)} cells")
        with ThreadPoolExecutor(max_workers=4) as pool:
            return extract_features(model, np.stack(list(pool.map(copy, range(len(paths))))))

    features, _ = cached_array("features", key, compute, default_cache_dir())
    return features
