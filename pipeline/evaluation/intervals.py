"""Confidence intervals that respect patients: a figure from a dozen patients varies with the patients drawn,
not with the images, so the bootstrap resamples whole patients, within each class (every resample keeps both
classes and the class mix of patients)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .metrics import intervals_problem

BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95
MIN_PATIENTS = 3
"""Fewest patients of a class for an interval that rests on that class: with one or two the patient resamples
barely vary it, and the interval would show image-level spread only (a zero-width specificity from one healthy
subject). Below it the figure keeps its value and its interval is n/a with the reason."""
CLASSES_OF = {
    "roc_auc": ("ALL", "HEM"),
    "balanced_accuracy": ("ALL", "HEM"),
    "sensitivity": ("ALL",),
    "specificity": ("HEM",),
}
"""The classes whose patients each figure's interval rests on."""


def _sensitivity(truth: np.ndarray, prob_all: np.ndarray) -> float:
    return float(np.mean(prob_all[truth] >= 0.5))


def _specificity(truth: np.ndarray, prob_all: np.ndarray) -> float:
    return float(np.mean(prob_all[~truth] < 0.5))


def _roc_auc(truth: np.ndarray, prob_all: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): scikit-learn's value, without its input checks
    that cost ~5 ms a call, a thousand calls per interval."""
    ranks = rankdata(prob_all)
    positives = int(truth.sum())
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * (len(truth) - positives)))


def _balanced_accuracy(truth: np.ndarray, prob_all: np.ndarray) -> float:
    return (_sensitivity(truth, prob_all) + _specificity(truth, prob_all)) / 2


FIGURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": _roc_auc,
    "balanced_accuracy": _balanced_accuracy,
    "sensitivity": _sensitivity,
    "specificity": _specificity,
}
"""Each figure from (is ALL, P(ALL)) of the images."""


def _patient_draws(
    predictions: pd.DataFrame, samples: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray], dict[str, int], int]:
    """(is ALL per image, the rows of each resample, patients per class, patients): `samples` resamples of the
    patients, drawn with replacement within each class; no resample when the predictions hold one class."""
    truth = (predictions["label"] == "ALL").to_numpy()
    # a patient of each class apart: images of unknown patients ("unknown") of both classes are not one patient
    patients = (predictions["patient"].astype(str) + "|" + predictions["label"].astype(str)).to_numpy()
    groups = {name: np.flatnonzero(patients == name) for name in np.unique(patients)}
    by_class = [[name for name, rows in groups.items() if truth[rows[0]] == is_all] for is_all in (True, False)]
    counts = {"ALL": len(by_class[0]), "HEM": len(by_class[1])}
    if not all(by_class):
        return truth, [], counts, len(groups)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        chosen = [rng.choice(names, len(names)) for names in by_class]
        draws.append(np.concatenate([groups[name] for names in chosen for name in names]))
    return truth, draws, counts, len(groups)


def _too_few(name: str, counts: dict[str, int]) -> str | None:
    """Why an interval of figure `name` is n/a (a class it rests on has fewer than MIN_PATIENTS), or None."""
    few = [
        f"{counts[label]} {label} {'patient' if label == 'ALL' else 'subject'}{'s' * (counts[label] != 1)}"
        for label in CLASSES_OF[name]
        if counts[label] < MIN_PATIENTS
    ]
    if not few:
        return None
    return f"only {' and '.join(few)}: an interval needs at least {MIN_PATIENTS} of each class it rests on"


def patient_bootstrap(
    predictions: pd.DataFrame,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    baseline: np.ndarray | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per figure: the point estimate and a percentile interval over `samples` resamples of the patients of
    `predictions` (columns label, patient, prob_all), drawn with replacement within each class. A figure
    that needs both classes is None when the predictions hold one. An interval resting on a class with fewer
    than `MIN_PATIENTS` patients is n/a (`low` and `high` None) and `unavailable` says why. With `baseline` (another
    model's P(ALL) of the same images), each figure is the difference, this model's minus the baseline's, resampled
    together: a paired comparison."""
    truth, draws, counts, patients = _patient_draws(predictions, samples, seed)
    prob = predictions["prob_all"].to_numpy(dtype=float)
    other = None if baseline is None else np.asarray(baseline, dtype=float)

    def figure_of(name: str, rows: np.ndarray) -> float:
        value = FIGURES[name](truth[rows], prob[rows])
        return value if other is None else value - FIGURES[name](truth[rows], other[rows])

    if not draws:
        return {
            name: {"value": None, "low": None, "high": None, "patients": patients}
            | {"unavailable": "the predictions hold one class only"}
            for name in FIGURES
        }
    alpha, every = (1 - level) / 2, np.arange(len(truth))
    result: dict[str, dict[str, float | int | None]] = {}
    for name in FIGURES:
        result[name] = {"value": figure_of(name, every), "low": None, "high": None, "patients": patients}
        if why := _too_few(name, counts):
            result[name]["unavailable"] = why
            continue
        values = np.array([figure_of(name, rows) for rows in draws])
        result[name].update(low=float(np.quantile(values, alpha)), high=float(np.quantile(values, 1 - alpha)))
    return result


def format_interval(figure: dict[str, float | int | None], digits: int = 2) -> str:
    """ "0.87, 95 % CI 0.80-0.93", "0.87, 95 % CI n/a (only 1 HEM subject...)", or "undefined"."""
    if figure.get("value") is None:
        return "undefined"
    if figure.get("low") is None or figure.get("high") is None:
        return f"{figure['value']:.{digits}f}, {round(LEVEL * 100)} % CI n/a ({figure.get('unavailable') or 'none'})"
    return (
        f"{figure['value']:.{digits}f}, {round(LEVEL * 100)} % CI {figure['low']:.{digits}f}-"
        f"{figure['high']:.{digits}f}"
    )


NAMES = {
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC AUC",
    "sensitivity": "sensitivity (ALL)",
    "specificity": "specificity (HEM)",
}


def interval_line(intervals: dict[str, dict[str, float | int | None]] | None, digits: int = 2) -> str:
    """One line of every figure with its interval and the patients resampled; empty when there is none (or what
    is there is not a table of intervals)."""
    if not intervals or intervals_problem(intervals):
        return ""
    shown = [
        f"{NAMES[name]} {format_interval(intervals[name], digits)}"
        for name in NAMES
        if name in intervals and intervals[name].get("value") is not None
    ]
    if not shown:
        return ""
    patients = next(iter(intervals.values())).get("patients")
    return "; ".join(shown) + f" (patient bootstrap over {patients} patients)"
