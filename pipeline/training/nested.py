"""Nested patient cross-validation of frozen-feature candidates beside the constant answer and the shortcut
baselines, with stress tests: every choice (a candidate's regularisation) is made on inner folds of the outer
training patients only; each outer fold's test patients are touched once, by the model chosen without them.

Per candidate: the mean of the outer folds' ROC AUC and balanced accuracy (the cross-validation figure), the
patient-bootstrap interval of the pooled out-of-fold predictions (labelled pooled), the ROC AUC of the same test
cells zoomed to the other class's size, recoloured to its colour and blurred, and the paired difference to the
logistic regression on the same features, fold by fold.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import CELL_AREA, ClaheSettings
from ..data.cache import cache_key, cached_array
from ..data.decode import read_image
from ..data.layouts import scan_dataset
from ..data.perturb import PERTURBATION_VERSION, perturbed_copy
from ..data.preprocess import preprocess, zoom_cell
from ..data.shortcuts import (
    STRESSES,
    describe,
    describe_files,
    fold_scores,
    fold_statistics,
    patient_folds,
    stressed,
)
from ..evaluation.intervals import patient_bootstrap
from ..inference.batches import extract_features
from ..models.model import backbone_fingerprint, build_model
from .candidates import (
    CANDIDATES,
    NEEDS,
    PERTURBED,
    RANDOM_ZOOM,
    SIZE_NORMALISED,
    VIEWS,
    ZOOM_RANGE,
    CellTable,
)
from .features import FEATURE_CODE_VERSION

REFERENCE = "logistic regression on features, C fixed"


def nested_cross_validation(table: CellTable, folds: int = 3, seed: int = 0, heads: bool = False) -> dict[str, Any]:
    """Every candidate on the same outer patient folds: per-fold figures, their mean, the pooled interval, the
    stress tests and the paired difference to `REFERENCE`; the outer test patients are used once, to score.
    Candidates whose view the table lacks are left out, and the Keras head unless `heads`."""
    outer = patient_folds(table.is_all, table.patients, folds, seed)
    results: dict[str, Any] = {
        "folds": folds,
        "test_patients": [sorted(set(table.patients[test])) for test in outer],
        "candidates": {},
    }
    for name, fit in CANDIDATES.items():
        if not _can_score(name, table, heads):
            continue
        prob = np.zeros(len(table.is_all))
        under = {stress: np.zeros(len(table.is_all)) for stress in table.stressed_features}
        chosen = []
        for test in outer:
            train = np.setdiff1d(np.arange(len(table.is_all)), test)
            predict, choice = fit(train, table.is_all, table, table.patients)
            prob[test] = predict(test, None)
            for stress in under:
                under[stress][test] = predict(test, stress)
            chosen.append(choice)
        scores = fold_scores(table.is_all, prob, outer) if name != "constant answer" else _constant_scores(outer)
        pooled = patient_bootstrap(
            pd.DataFrame({"label": np.where(table.is_all, "ALL", "HEM"), "patient": table.patients, "prob_all": prob})
        )
        results["candidates"][name] = {
            **scores,
            "pooled": pooled,
            "choices": chosen,
            "stressed_roc_auc": {
                stress: fold_scores(table.is_all, values, outer)["roc_auc"] for stress, values in under.items()
            }
            if name != "constant answer"
            else {},
        }
    reference = results["candidates"][REFERENCE]["roc_auc_folds"]
    for scores in results["candidates"].values():
        differences = np.asarray(scores["roc_auc_folds"]) - np.asarray(reference)
        scores["minus_reference_roc_auc"] = {
            "mean": float(differences.mean()),
            "folds": differences.tolist(),
            "better_in": int((differences > 0).sum()),
        }
    return results


def _can_score(name: str, table: CellTable, heads: bool) -> bool:
    """Whether the table holds what candidate `name` needs (views of every member, other backbones) and Keras may
    be used."""
    members = [table, *table.others.values()]
    for need in NEEDS.get(name, ()):
        if need == "keras" and not heads or need == "others" and not table.others:
            return False
        if need not in ("keras", "others") and any(need not in member.views for member in members):
            return False
    return True


def _constant_scores(outer: list[np.ndarray]) -> dict[str, Any]:
    return {
        "roc_auc": 0.5,
        "balanced_accuracy": 0.5,
        "roc_auc_folds": [0.5] * len(outer),
        "balanced_accuracy_folds": [0.5] * len(outer),
        "pooled_roc_auc": 0.5,
    }


def nested_lines(results: dict[str, Any]) -> list[str]:
    """The table as text: one line per candidate."""
    stresses = [
        stress for stress in STRESSES if any(stress in c["stressed_roc_auc"] for c in results["candidates"].values())
    ]
    lines = [
        f"Nested patient cross-validation, {results['folds']} outer folds (test patients: "
        + "; ".join(", ".join(patients) for patients in results["test_patients"])
        + ")",
        "  ROC AUC and balanced accuracy: mean of the outer folds; pooled: every cell's out-of-fold P(ALL), "
        "95 % patient bootstrap; then the ROC AUC with test cells " + ", ".join(stresses),
    ]
    for name, scores in results["candidates"].items():
        pooled = scores["pooled"]["roc_auc"]
        interval = "n/a" if pooled.get("low") is None else f"{pooled['low']:.2f}-{pooled['high']:.2f}"
        stressed = "  ".join(
            f"{scores['stressed_roc_auc'][stress]:.3f}" for stress in stresses if stress in scores["stressed_roc_auc"]
        )
        paired = scores["minus_reference_roc_auc"]
        lines.append(
            f"  {name:58s} ROC AUC {scores['roc_auc']:.3f}  BA {scores['balanced_accuracy']:.3f}  "
            f"pooled {scores['pooled_roc_auc']:.3f} ({interval})  stressed {stressed or '-'}  "
            f"vs reference {paired['mean']:+.3f} (better in {paired['better_in']} of {results['folds']})"
        )
        choices = [choice.get("C") for choice in scores["choices"] if choice.get("C") is not None]
        if choices and "chosen" in name:  # an ensemble chose one C per backbone
            shown = (
                "/".join(f"{c:g}" for c in choice) if isinstance(choice, list) else f"{choice:g}" for choice in choices
            )
            lines.append(f"  {'':58s} C chosen per fold: {', '.join(shown)}")
    return lines


def cell_table(
    data_dir: str,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    folds: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    views: tuple[str, ...] = VIEWS,
) -> CellTable:
    """Features (ImageNet `backbone`, frozen, pooled) and descriptors of every labelled training cell of `data_dir`,
    clean and under each stress, and the features of each of `views`; a test cell is moved to the statistics of
    the other class on the training patients of its own outer fold, so no stress uses what its fold tests."""
    records = scan_dataset(data_dir).training_records()
    paths = [record.path for record in records]
    labels = np.array([record.label for record in records])
    patients = np.array([record.patient for record in records]).astype(str)
    is_all = labels == "ALL"
    say = progress or (lambda text: None)
    say(f"describing {len(paths)} cells")
    descriptors = describe_files(paths)
    statistics_of = fold_statistics(descriptors, labels, patient_folds(is_all, patients, folds, seed))
    zoom = np.exp(np.random.default_rng(seed).uniform(*np.log(ZOOM_RANGE), len(paths)))
    model, weights = build_model(backbone, image_size, "imagenet", freeze_backbone=True)
    key = {
        "paths": cache_key(paths, image_size, ClaheSettings()),
        "backbone": backbone,
        "weights": weights,
        "weights_sha256": backbone_fingerprint(model),
        "feature_code": FEATURE_CODE_VERSION,
        "folds": folds,
        "seed": seed,
    }

    def version(stress: str | None, view: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        columns = list(descriptors.columns)
        return _cell_version(model, key, paths, labels, statistics_of, zoom, image_size, columns, say, stress, view)

    features, described = version(None)
    stressed_versions = {stress: version(stress) for stress in STRESSES}
    other_views: dict[str, dict[str | None, np.ndarray]] = {}
    for view in views:
        stresses = (None, *STRESSES) if view == SIZE_NORMALISED else (None,)
        other_views[view] = {stress: version(stress, view)[0] for stress in stresses}
    return CellTable(
        is_all,
        patients,
        features,
        described,
        {stress: found[0] for stress, found in stressed_versions.items()},
        {stress: found[1] for stress, found in stressed_versions.items()},
        other_views,
    )


def _cell_version(
    model: Any,
    key: dict[str, Any],
    paths: list[str],
    labels: np.ndarray,
    statistics_of: np.ndarray,
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
        if view == PERTURBED:
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
    if view == PERTURBED:
        extra["perturbation"] = PERTURBATION_VERSION
    both, _ = cached_array("nested", {**key, "stress": stress, **extra}, compute)
    width = both.shape[1] - len(columns)
    return both[:, :width], pd.DataFrame(both[:, width:], columns=columns)
