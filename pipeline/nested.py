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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .cache import cache_key, cached_array
from .config import ClaheSettings
from .data import scan_dataset
from .fit import FEATURE_CODE_VERSION
from .inference import extract_features
from .intervals import patient_bootstrap
from .model import backbone_fingerprint, build_model
from .preprocess import preprocess, read_image
from .shortcuts import (
    BASELINES,
    STRESSES,
    ClassStatistics,
    describe,
    describe_files,
    fold_scores,
    linear_model,
    patient_folds,
    stressed,
)

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The logistic regression's inverse regularisation strengths the inner folds choose among."""
FIXED_C = 1.0
"""The regularisation of the untuned logistic regression: chosen before looking (scikit-learn's default)."""
INNER_FOLDS = 2


@dataclass(frozen=True)
class CellTable:
    """Everything nested cross-validation reads, one row per cell: class, patient, backbone features and simple
    descriptors, clean and under each stress (the same cells, the same order)."""

    is_all: np.ndarray
    patients: np.ndarray
    features: np.ndarray
    descriptors: pd.DataFrame
    stressed_features: dict[str, np.ndarray]
    stressed_descriptors: dict[str, pd.DataFrame]


def _constant(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray,
              ) -> tuple[Callable[[np.ndarray, str | None], np.ndarray], dict[str, Any]]:
    majority = float(is_all[train].mean() >= 0.5)  # the best constant answer: the training majority, every time
    return (lambda rows, stress: np.full(len(rows), majority)), {}


def _descriptor_model(columns: tuple[str, ...]) -> Callable[..., Any]:
    def fit(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray) -> tuple[Any, dict]:
        model = linear_model().fit(table.descriptors[list(columns)].to_numpy(float)[train], is_all[train])

        def predict(rows: np.ndarray, stress: str | None) -> np.ndarray:
            source = table.descriptors if stress is None else table.stressed_descriptors[stress]
            return model.predict_proba(source[list(columns)].to_numpy(float)[rows])[:, 1]

        return predict, {}
    return fit


def _feature_model(c: float | None) -> Callable[..., Any]:
    """A logistic regression on the backbone's features: with `c` fixed, or (None) chosen on inner patient folds
    of the training rows by mean ROC AUC."""
    def fit(train: np.ndarray, is_all: np.ndarray, table: CellTable, patients: np.ndarray) -> tuple[Any, dict]:
        chosen = c if c is not None else choose_c(table.features[train], is_all[train], patients[train])
        model = linear_model(chosen).fit(table.features[train], is_all[train])

        def predict(rows: np.ndarray, stress: str | None) -> np.ndarray:
            source = table.features if stress is None else table.stressed_features[stress]
            return model.predict_proba(source[rows])[:, 1]

        return predict, {"C": chosen}
    return fit


def choose_c(features: np.ndarray, is_all: np.ndarray, patients: np.ndarray) -> float:
    """The C of `C_GRID` with the best mean ROC AUC over inner patient folds of these rows alone."""
    folds = patient_folds(is_all, patients, INNER_FOLDS)
    scores = {}
    for c in C_GRID:
        prob = np.zeros(len(is_all))
        for test in folds:
            train = np.setdiff1d(np.arange(len(is_all)), test)
            prob[test] = linear_model(c).fit(features[train], is_all[train]).predict_proba(features[test])[:, 1]
        scores[c] = fold_scores(is_all, prob, folds)["roc_auc"]
    return max(C_GRID, key=lambda c: (scores[c], c))


CANDIDATES: dict[str, Callable[..., Any]] = {
    "constant answer": _constant,
    "cell area alone (shortcut)": _descriptor_model(BASELINES["cell area"]),
    "size, brightness, sharpness, colour (shortcuts)": _descriptor_model(BASELINES["all of these"]),
    "logistic regression on features, C fixed": _feature_model(FIXED_C),
    "logistic regression on features, C chosen on inner folds": _feature_model(None),
}
REFERENCE = "logistic regression on features, C fixed"


def nested_cross_validation(table: CellTable, folds: int = 3, seed: int = 0) -> dict[str, Any]:
    """Every candidate on the same outer patient folds: per-fold figures, their mean, the pooled interval, the
    stress tests and the paired difference to `REFERENCE`; the outer test patients are used once, to score."""
    outer = patient_folds(table.is_all, table.patients, folds, seed)
    results: dict[str, Any] = {"folds": folds, "test_patients": [sorted(set(table.patients[test])) for test in outer],
                               "candidates": {}}
    for name, fit in CANDIDATES.items():
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
        pooled = patient_bootstrap(pd.DataFrame({"label": np.where(table.is_all, "ALL", "HEM"),
                                                 "patient": table.patients, "prob_all": prob}))
        results["candidates"][name] = {
            **scores, "pooled": pooled, "choices": chosen,
            "stressed_roc_auc": {stress: fold_scores(table.is_all, values, outer)["roc_auc"]
                                 for stress, values in under.items()} if name != "constant answer" else {}}
    reference = results["candidates"][REFERENCE]["roc_auc_folds"]
    for scores in results["candidates"].values():
        differences = np.asarray(scores["roc_auc_folds"]) - np.asarray(reference)
        scores["minus_reference_roc_auc"] = {"mean": float(differences.mean()), "folds": differences.tolist(),
                                             "better_in": int((differences > 0).sum())}
    return results


def _constant_scores(outer: list[np.ndarray]) -> dict[str, Any]:
    return {"roc_auc": 0.5, "balanced_accuracy": 0.5, "roc_auc_folds": [0.5] * len(outer),
            "balanced_accuracy_folds": [0.5] * len(outer), "pooled_roc_auc": 0.5}


def nested_lines(results: dict[str, Any]) -> list[str]:
    """The table as text: one line per candidate."""
    stresses = [stress for stress in STRESSES
                if any(stress in c["stressed_roc_auc"] for c in results["candidates"].values())]
    lines = [f"Nested patient cross-validation, {results['folds']} outer folds (test patients: "
             + "; ".join(", ".join(patients) for patients in results["test_patients"]) + ")",
             "  ROC AUC and balanced accuracy: mean of the outer folds; pooled: every cell's out-of-fold P(ALL), "
             "95 % patient bootstrap; then the ROC AUC with test cells " + ", ".join(stresses)]
    for name, scores in results["candidates"].items():
        pooled = scores["pooled"]["roc_auc"]
        interval = ("n/a" if pooled.get("low") is None else f"{pooled['low']:.2f}-{pooled['high']:.2f}")
        stressed = "  ".join(f"{scores['stressed_roc_auc'][stress]:.3f}" for stress in stresses
                             if stress in scores["stressed_roc_auc"])
        paired = scores["minus_reference_roc_auc"]
        lines.append(f"  {name:58s} ROC AUC {scores['roc_auc']:.3f}  BA {scores['balanced_accuracy']:.3f}  "
                     f"pooled {scores['pooled_roc_auc']:.3f} ({interval})  stressed {stressed or '-'}  "
                     f"vs reference {paired['mean']:+.3f} (better in {paired['better_in']} of {results['folds']})")
        choices = [choice.get("C") for choice in scores["choices"] if choice.get("C") is not None]
        if choices and name != REFERENCE:
            lines.append(f"  {'':58s} C chosen per fold: {', '.join(f'{c:g}' for c in choices)}")
    return lines


def cell_table(data_dir: str, backbone: str = "efficientnet_lite0", image_size: int = 224, folds: int = 3,
               seed: int = 0, progress: Callable[[str], None] | None = None) -> CellTable:
    """Features (ImageNet `backbone`, frozen, pooled) and descriptors of every labelled training cell of `data_dir`,
    clean and under each stress; a test cell is moved to the statistics of the other class on the training
    patients of its own outer fold, so no stress uses what its fold tests."""
    records = scan_dataset(data_dir).training_records()
    paths = [record.path for record in records]
    labels = np.array([record.label for record in records])
    patients = np.array([record.patient for record in records]).astype(str)
    is_all = labels == "ALL"
    say = progress or (lambda text: None)
    say(f"describing {len(paths)} cells")
    descriptors = describe_files(paths)
    outer = patient_folds(is_all, patients, folds, seed)
    statistics_of = np.empty(len(paths), dtype=object)
    for test in outer:
        train = np.setdiff1d(np.arange(len(paths)), test)  # a test cell moves to its fold's training statistics
        statistics = ClassStatistics.of(descriptors.iloc[train].reset_index(drop=True), labels[train])
        for row in test:
            statistics_of[row] = statistics
    model, weights = build_model(backbone, image_size, "imagenet", freeze_backbone=True)
    clahe = ClaheSettings()
    key = {"paths": cache_key(paths, image_size, clahe), "backbone": backbone, "weights": weights,
           "weights_sha256": backbone_fingerprint(model), "feature_code": FEATURE_CODE_VERSION, "folds": folds,
           "seed": seed}

    def version(stress: str | None) -> tuple[np.ndarray, pd.DataFrame]:
        def image(row: int) -> np.ndarray:
            raw = read_image(paths[row])
            return raw if stress is None else stressed(raw, labels[row], stress, statistics_of[row])

        def compute() -> np.ndarray:
            say(f"features of {len(paths)} cells{'' if stress is None else ', ' + stress}")
            with ThreadPoolExecutor(max_workers=4) as pool:
                raws = list(pool.map(image, range(len(paths))))
            found = pd.DataFrame([describe(raw) for raw in raws]).to_numpy(float)
            inputs = np.stack([preprocess(raw, image_size, clahe) for raw in raws])
            return np.concatenate([extract_features(model, inputs), found], axis=1)

        both, _ = cached_array("nested", {**key, "stress": stress}, compute)
        width = both.shape[1] - len(descriptors.columns)
        return both[:, :width], pd.DataFrame(both[:, width:], columns=descriptors.columns)

    features, described = version(None)
    stressed_versions = {stress: version(stress) for stress in STRESSES}
    return CellTable(is_all, patients, features, described,
                     {stress: found[0] for stress, found in stressed_versions.items()},
                     {stress: found[1] for stress, found in stressed_versions.items()})
