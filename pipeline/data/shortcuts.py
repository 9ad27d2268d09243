"""Shortcuts a data set offers, measured: what a cell's size, brightness, sharpness or colour alone say about its
class, and stress transforms that take each away from a test cell (zoom it to the other class's size, recolour it
to the other class's colour, blur it).

C-NMC fold 1's three healthy subjects have small, dark cells: a classifier can score well there on size and
colour alone and fail on other patients. A figure that a one-feature baseline matches says little about cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..core.errors import PipelineError
from .decode import read_image
from .preprocess import cell_mask, zoom_to_area

HISTOGRAM_BINS = 8
DESCRIPTORS = ("cell_area", "brightness", "sharpness")
BASELINES: dict[str, tuple[str, ...]] = {
    "cell area": ("cell_area",),
    "brightness": ("brightness",),
    "sharpness": ("sharpness",),
    "colour histogram": tuple(f"hist_{channel}{index}" for channel in "rgb" for index in range(HISTOGRAM_BINS)),
}
BASELINES["all of these"] = tuple(dict.fromkeys(name for names in BASELINES.values() for name in names))
DESCRIBED = (
    *DESCRIPTORS,
    *(f"{kind}_{channel}" for kind in ("mean", "std") for channel in "rgb"),
    *(f"hist_{channel}{index}" for channel in "rgb" for index in range(HISTOGRAM_BINS)),
)
"""Every column `describe` gives, in its order."""
SHORTCUT_WARNING_AUC = 0.75
"""A baseline at or above this patient-grouped ROC AUC is a shortcut worth saying out loud."""
DEPENDENCE = ("cell_area", "brightness")
"""What a model's P(ALL) should not follow among one subject's cells: the cell's size as imaged and its brightness."""


def describe(image: np.ndarray) -> dict[str, float]:
    """A cell's size (share of the image), brightness (mean luminance on the cell), sharpness (variance of the
    Laplacian on the cell) and colour histogram (per channel, on the cell, shares summing to 1)."""
    mask = cell_mask(image)
    if not mask.any():
        raise PipelineError("No cell in the image: every pixel is background.")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    found = {
        "cell_area": float(mask.mean()),
        "brightness": float(gray[mask].mean()),
        "sharpness": float(laplacian[mask].var()),
    }
    pixels = image[mask].astype(np.float32)
    found.update({f"mean_{channel}": float(value) for channel, value in zip("rgb", pixels.mean(axis=0), strict=True)})
    found.update({f"std_{channel}": float(value) for channel, value in zip("rgb", pixels.std(axis=0), strict=True)})
    for index, channel in enumerate("rgb"):
        counts, _ = np.histogram(image[..., index][mask], bins=HISTOGRAM_BINS, range=(0, 256))
        found.update({f"hist_{channel}{bin_}": float(count) / mask.sum() for bin_, count in enumerate(counts)})
    return found


def describe_files(paths: Sequence[str], workers: int = 4) -> pd.DataFrame:
    """`describe` of every image file, one row per path (in order), read in parallel."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(lambda path: describe(read_image(path)), paths))
    return pd.DataFrame(rows, index=list(paths))


# -- stress transforms: each takes one shortcut away from a cell -----------------------------------------------
def recolour(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The cell's pixels moved, channel by channel, to the given mean and standard deviation (Reinhard-style
    colour transfer); the background stays black."""
    mask = cell_mask(image)
    out = image.astype(np.float32)
    for channel in range(3):
        values = out[..., channel][mask]
        spread = values.std() or 1.0
        out[..., channel][mask] = (values - values.mean()) / spread * std[channel] + mean[channel]
    out[~mask] = 0
    return np.clip(out, 0, 255).astype(np.uint8)


def colour_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the cell's pixels."""
    pixels = image[cell_mask(image)].astype(np.float32)
    return pixels.mean(axis=0), pixels.std(axis=0)


def blur(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """A Gaussian blur of the whole image: takes sharpness (focus) away."""
    return cv2.GaussianBlur(image, (0, 0), sigma)


@dataclass(frozen=True)
class ClassStatistics:
    """What the stress transforms move a cell to: each class's mean cell area and mean colour statistics."""

    area: dict[str, float]
    colour_mean: dict[str, np.ndarray]
    colour_std: dict[str, np.ndarray]

    @classmethod
    def of(cls, descriptors: pd.DataFrame, labels: Sequence[str]) -> ClassStatistics:
        """From the `describe` rows of cells and their classes."""
        by_label = {label: descriptors[np.asarray(labels) == label] for label in sorted(set(labels))}
        means = {label: rows[[f"mean_{c}" for c in "rgb"]].mean().to_numpy() for label, rows in by_label.items()}
        stds = {label: rows[[f"std_{c}" for c in "rgb"]].mean().to_numpy() for label, rows in by_label.items()}
        return cls({label: float(rows["cell_area"].mean()) for label, rows in by_label.items()}, means, stds)


STRESSES = ("zoomed to the other class's size", "recoloured to the other class's colour", "blurred")


def stressed(image: np.ndarray, label: str, stress: str, statistics: ClassStatistics) -> np.ndarray:
    """`image` (of class `label`) with one shortcut taken away: moved to the *other* class's size or colour, or
    blurred."""
    other = next(name for name in statistics.area if name != label)
    if stress == STRESSES[0]:
        return zoom_to_area(image, statistics.area[other])
    if stress == STRESSES[1]:
        return recolour(image, statistics.colour_mean[other], statistics.colour_std[other])
    if stress == STRESSES[2]:
        return blur(image)
    raise PipelineError(f"Unknown stress {stress!r}; choose one of {', '.join(STRESSES)}.")


# -- baselines ------------------------------------------------------------------------------------------------------
def patient_folds(labels: np.ndarray, patients: np.ndarray, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Test indices of `folds` patient-grouped folds that keep both classes in each (scikit-learn's
    StratifiedGroupKFold); refused when a class has fewer patients than folds."""
    for label in np.unique(labels):
        count = len(np.unique(patients[labels == label]))
        if count < folds:
            raise PipelineError(f"{count} {label} patient(s) cannot fill {folds} patient folds.")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(labels)), labels, patients)]


def linear_model(c: float = 1.0) -> Any:
    """The linear baseline used throughout: standardised inputs, balanced class weights, L2 logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))


def out_of_fold(features: np.ndarray, is_all: np.ndarray, folds: list[np.ndarray], c: float = 1.0) -> np.ndarray:
    """P(ALL) of every image from a model fit on the other folds' patients."""
    prob = np.zeros(len(is_all))
    for test in folds:
        train = np.setdiff1d(np.arange(len(is_all)), test)
        model = linear_model(c).fit(features[train], is_all[train])
        prob[test] = model.predict_proba(features[test])[:, 1]
    return prob


def fold_scores(is_all: np.ndarray, prob: np.ndarray, folds: list[np.ndarray]) -> dict[str, Any]:
    """ROC AUC and balanced accuracy per fold, their means (the cross-validation figure) and the pooled value."""
    aucs = [float(roc_auc_score(is_all[test], prob[test])) for test in folds]
    balanced = [float(balanced_accuracy_score(is_all[test], prob[test] >= 0.5)) for test in folds]
    return {
        "roc_auc": float(np.mean(aucs)),
        "balanced_accuracy": float(np.mean(balanced)),
        "roc_auc_folds": aucs,
        "balanced_accuracy_folds": balanced,
        "pooled_roc_auc": float(roc_auc_score(is_all, prob)),
    }


def shortcut_baselines(
    descriptors: pd.DataFrame, labels: Sequence[str], patients: Sequence[str], folds: int = 3, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each simple baseline (one descriptor, the colour histogram, all of them) as a logistic regression scored by
    patient-grouped cross-validation: per-fold and mean ROC AUC and balanced accuracy, and whether it reaches
    `SHORTCUT_WARNING_AUC` (a shortcut)."""
    is_all = np.asarray(labels) == "ALL"
    test_folds = patient_folds(is_all, np.asarray(patients).astype(str), folds, seed)
    results = {}
    for name, columns in BASELINES.items():
        prob = out_of_fold(descriptors[list(columns)].to_numpy(dtype=float), is_all, test_folds)
        scores = fold_scores(is_all, prob, test_folds)
        results[name] = {**scores, "shortcut": scores["roc_auc"] >= SHORTCUT_WARNING_AUC}
    return results


def shortcut_lines(results: dict[str, dict[str, Any]], folds: int) -> list[str]:
    """The baselines as lines of text, shortcuts said out loud."""
    lines = [
        f"Shortcut baselines ({folds}-fold patient-grouped cross-validation, logistic regression; mean of the "
        "folds' figures):"
    ]
    for name, scores in results.items():
        flag = "  <- a shortcut: this alone separates the classes here" if scores["shortcut"] else ""
        lines.append(
            f"  {name:18s} ROC AUC {scores['roc_auc']:.3f}  balanced accuracy {scores['balanced_accuracy']:.3f}{flag}"
        )
    return lines


def fold_statistics(descriptors: pd.DataFrame, labels: np.ndarray, outer: list[np.ndarray]) -> np.ndarray:
    """For each cell, the class statistics of its outer fold's training cells: a stressed test cell moves to
    those, so no stress uses what its fold tests."""
    statistics_of = np.empty(len(labels), dtype=object)
    for test in outer:
        train = np.setdiff1d(np.arange(len(labels)), test)
        statistics = ClassStatistics.of(descriptors.iloc[train].reset_index(drop=True), labels[train])
        for row in test:
            statistics_of[row] = statistics
    return statistics_of


def _rho(x: pd.Series, y: pd.Series) -> float | None:
    from scipy.stats import spearmanr

    if x.nunique() < 2 or y.nunique() < 2:
        return None  # Spearman's rho of a constant is undefined
    return float(spearmanr(x, y)[0])


def within_subject_dependence(predictions: pd.DataFrame, descriptors: pd.DataFrame) -> dict[str, Any]:
    """How a model's P(ALL) follows each of `DEPENDENCE` among the cells of one subject: Spearman's rho per subject
    (one person, one class, at least 3 cells), then per class the mean, lowest and highest. Within a healthy subject
    every cell is healthy, so a rho far from 0 is the model following size or brightness; size normalisation hides
    size from the zoom stress (it zooms the cell back), not from this. `predictions`: patient, label, prob_all;
    `descriptors`: the same rows' descriptors (`describe`)."""
    table = pd.concat(
        [
            predictions[["patient", "label", "prob_all"]].reset_index(drop=True),
            descriptors[list(DEPENDENCE)].reset_index(drop=True),
        ],
        axis=1,
    )
    subjects = {
        str(patient): {
            "label": str(label),
            "cells": len(cells),
            **{d: _rho(cells[d], cells["prob_all"]) for d in DEPENDENCE},
        }
        for (label, patient), cells in table.groupby(["label", "patient"])
        if len(cells) >= 3
    }
    classes: dict[str, Any] = {}
    for label in ("ALL", "HEM"):
        for name in DEPENDENCE:
            values = [s[name] for s in subjects.values() if s["label"] == label and s[name] is not None]
            if values:
                summary = {"mean": float(np.mean(values)), "lowest": min(values), "highest": max(values)}
                classes.setdefault(label, {})[name] = {**summary, "subjects": len(values)}
    return {"subjects": subjects, "classes": classes}


def dependence_lines(result: dict[str, Any], name: str) -> list[str]:
    """A model's within-subject dependence as lines of text."""
    lines = [f"{name}: Spearman's rho of P(ALL) with each descriptor among one subject's cells (mean; lowest, highest)"]
    for label, figures in result["classes"].items():
        parts = [
            f"{d.replace('_', ' ')} {f['mean']:+.2f} ({f['lowest']:+.2f}, {f['highest']:+.2f})"
            for d, f in figures.items()
        ]
        lines.append(f"  within each {label} subject ({next(iter(figures.values()))['subjects']}): " + "; ".join(parts))
    return lines
