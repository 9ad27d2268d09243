"""The tables nested cross-validation reads (`candidates.CellTable`): frozen ImageNet features and descriptors of every
labelled cell of a data set, clean, under each stress and in each view, and of an other-subject check's cells; every
version cached (keyed by the images, the backbone's very weights, the view, the stress and its folds)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import CELL_AREA, ClaheSettings
from ..data.cache import cache_key, cached_array
from ..data.decode import read_image
from ..data.layouts import scan_dataset
from ..data.perturb import PERTURBATION_VERSION, perturbed_copy
from ..data.preprocess import preprocess, zoom_cell
from ..data.shortcuts import DESCRIBED, STRESSES, describe, describe_files, fold_statistics, stressed
from ..data.splits import cross_validation_folds
from ..inference.batches import extract_features
from ..models.model import backbone_fingerprint, build_model
from .candidates import (
    PERTURBED,
    PERTURBED_AS_IMAGED,
    RANDOM_ZOOM,
    SIZE_NORMALISED,
    TEST_VIEWS,
    VIEWS,
    ZOOM_RANGE,
    CellTable,
)
from .features import FEATURE_CODE_VERSION

SEED = 42
"""The outer folds' seed: `crossval --seed`'s default, so the outer folds are the very folds of `crossval --folds K`
(a fine-tuned recipe's runs are scored on the same patients as the frozen candidates)."""


def cell_table(
    data_dir: str,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    folds: int = 3,
    seed: int = SEED,
    progress: Callable[[str], None] | None = None,
    views: tuple[str, ...] = VIEWS,
    stresses: bool = True,
) -> CellTable:
    """Features (ImageNet `backbone`, frozen, pooled) and descriptors of every labelled training cell of `data_dir`,
    clean and (with `stresses`) under each stress, and the features of each of `views`; a test cell is moved to the
    statistics of the other class on the training patients of its own outer fold, so no stress uses what its fold
    tests."""
    records = scan_dataset(data_dir).training_records()
    cells = pd.DataFrame(
        {
            "path": [str(Path(record.path).resolve()) for record in records],
            "patient": [str(record.patient) for record in records],
            "label": [record.label for record in records],
        }
    )
    return _table(cells, backbone, image_size, (folds, seed), progress, views, stresses)


def check_table(
    cells: pd.DataFrame,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    progress: Callable[[str], None] | None = None,
    views: tuple[str, ...] = TEST_VIEWS,
) -> CellTable:
    """The check's `cells` (path, patient, label) as a table of the same backbone: features as imaged and in the
    `views` a candidate scores in, descriptors; no stress (the check is scored clean)."""
    return _table(cells, backbone, image_size, None, progress, tuple(view for view in views if view in TEST_VIEWS))


def _table(
    cells: pd.DataFrame,
    backbone: str,
    image_size: int,
    stress_folds: tuple[int, int] | None,
    progress: Callable[[str], None] | None,
    views: tuple[str, ...],
    stresses: bool = True,
) -> CellTable:
    """The table of `cells`: with `stress_folds` (folds, seed), the zoom and random-zoom draws of that seed and (with
    `stresses`) stressed versions moved to the statistics of each outer fold's training patients; without, clean
    only."""
    paths, labels = cells["path"].tolist(), cells["label"].to_numpy()
    patients = cells["patient"].to_numpy().astype(str)
    is_all = labels == "ALL"
    say = progress or (lambda text: None)
    descriptors = _descriptors(paths, say)
    folds, seed = stress_folds or (0, SEED)
    statistics_of = (
        fold_statistics(descriptors, labels, cross_validation_folds(labels, patients, folds, seed))
        if stress_folds
        else None
    )
    zoom = np.exp(np.random.default_rng(seed).uniform(*np.log(ZOOM_RANGE), len(paths)))
    model, weights = build_model(backbone, image_size, "imagenet", freeze_backbone=True)
    key = {
        "paths": cache_key(paths, image_size, ClaheSettings()),
        "backbone": backbone,
        "weights": weights,
        "weights_sha256": backbone_fingerprint(model),
        "feature_code": FEATURE_CODE_VERSION,
        "seed": seed,
    }

    def version(stress: str | None, view: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        columns = list(descriptors.columns)
        stress_key = {"folds": folds} if stress else {}
        return _cell_version(
            model, {**key, **stress_key}, paths, labels, statistics_of, zoom, image_size, columns, say, stress, view
        )

    measured = STRESSES if stress_folds and stresses else ()
    features, described = version(None)
    stressed_versions = {stress: version(stress) for stress in measured}
    other_views: dict[str, dict[str | None, np.ndarray]] = {}
    for view in views:
        of_view = (None, *measured) if view == SIZE_NORMALISED else (None,)
        other_views[view] = {stress: version(stress, view)[0] for stress in of_view}
    return CellTable(
        is_all,
        patients,
        features,
        described,
        {stress: found[0] for stress, found in stressed_versions.items()},
        {stress: found[1] for stress, found in stressed_versions.items()},
        other_views,
        paths=tuple(paths),
    )


def _descriptors(paths: list[str], say: Callable[[str], None]) -> pd.DataFrame:
    """`describe_files` of the cells, cached: every backbone of an ensemble describes the same cells."""

    def compute() -> np.ndarray:
        say(f"describing {len(paths)} cells")
        return describe_files(paths)[list(DESCRIBED)].to_numpy(float)

    values, _ = cached_array(
        "descriptors", {"paths": cache_key(paths, 0, ClaheSettings()), "columns": DESCRIBED}, compute
    )
    return pd.DataFrame(values, columns=list(DESCRIBED), index=paths)


def _cell_version(
    model: Any,
    key: dict[str, Any],
    paths: list[str],
    labels: np.ndarray,
    statistics_of: np.ndarray | None,
    zoom: np.ndarray,
    image_size: int,
    columns: list[str],
    say: Callable[[str], None],
    stress: str | None,
    view: str | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Features and descriptors of every cell, under `stress` (None: clean) and in `view` (None: as imaged),
    cached."""
    clahe = ClaheSettings(cell_area=CELL_AREA if view in (SIZE_NORMALISED, PERTURBED) else 0.0)

    def image(row: int) -> np.ndarray:
        raw = read_image(paths[row])
        raw = raw if stress is None else stressed(raw, labels[row], stress, statistics_of[row])
        if view in (PERTURBED, PERTURBED_AS_IMAGED):
            return perturbed_copy(raw, key["seed"], row)
        return zoom_cell(raw, float(zoom[row])) if view == RANDOM_ZOOM else raw

    def compute() -> np.ndarray:
        say(
            f"features of {len(paths)} cells{'' if stress is None else ', ' + stress}"
            f"{'' if view is None else ', ' + view}"
        )
        with ThreadPoolExecutor(max_workers=4) as pool:
            raws = list(pool.map(image, range(len(paths))))
        found = pd.DataFrame([describe(raw) for raw in raws]).to_numpy(float)
        inputs = np.stack([preprocess(raw, image_size, clahe) for raw in raws])
        return np.concatenate([extract_features(model, inputs), found], axis=1)

    extra = {} if view is None else {"view": view, "cell_area": CELL_AREA, "zoom_range": ZOOM_RANGE}
    if view in (PERTURBED, PERTURBED_AS_IMAGED):
        extra["perturbation"] = PERTURBATION_VERSION
    both, _ = cached_array("nested", {**key, "stress": stress, **extra}, compute)
    width = both.shape[1] - len(columns)
    return both[:, :width], pd.DataFrame(both[:, width:], columns=columns)
