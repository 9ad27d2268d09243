"""The layout of a metrics dict (`metrics.json`, its validation part, an evaluation's, a fold's): the `Metrics`
view that names its figures, and the check that it holds what its readers expect, so a damaged file makes a run
`broken` with the reason instead of an exception on a page. The only module that reads scikit-learn's report
layout; imports nothing heavy (run listings and the command line read every run)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

MACRO_AVERAGE, WEIGHTED_AVERAGE = "macro avg", "weighted avg"
REPORT_AVERAGES = (MACRO_AVERAGE, WEIGHTED_AVERAGE)
"""The rows scikit-learn's `classification_report` adds after the classes."""

_REPORT_FIGURES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "weighted_f1": lambda m: (m.get(WEIGHTED_AVERAGE) or {}).get("f1-score"),
    "weighted_precision": lambda m: (m.get(WEIGHTED_AVERAGE) or {}).get("precision"),
    "weighted_recall": lambda m: (m.get(WEIGHTED_AVERAGE) or {}).get("recall"),
    "macro_f1": lambda m: (m.get(MACRO_AVERAGE) or {}).get("f1-score"),
    "sensitivity": lambda m: (m.get("ALL") or {}).get("recall"),
    "specificity": lambda m: (m.get("HEM") or {}).get("recall"),
    "ece": lambda m: (m.get("calibration") or {}).get("ece"),
}
"""Figures kept in scikit-learn's report layout (or nested), by name: this module alone reads that layout."""
OUT_OF_FOLD = "out_of_fold"
"""The `subset` of a final model's metrics (split `none`): a cross-validation's out-of-fold predictions."""
RELEASE_OUT_OF_FOLD = "out-of-fold (every cell)"
"""The `subset` of a released model's metrics: each cell scored by the heads of the fold that held it out."""


@dataclass(frozen=True)
class Metrics:
    """A read-only view of a metrics dict (`metrics.json`, a fold's, an evaluation's) with its figures by name:
    `accuracy`, `balanced_accuracy`, `roc_auc`, `mcc`, `brier`, the patient figures, and `weighted_f1`,
    `macro_f1`, `weighted_precision`, `weighted_recall`, `sensitivity` (ALL recall), `specificity` (HEM
    recall), `ece`. None where the subset cannot support a figure."""

    values: dict[str, Any]

    @classmethod
    def of(cls, values: dict[str, Any] | None) -> Metrics:
        """A view of a metrics dict (an empty one for None)."""
        return cls(values or {})

    def __bool__(self) -> bool:
        return bool(self.values)

    def figure(self, name: str) -> Any:
        """One figure by name, from its place in the metrics layout."""
        read = _REPORT_FIGURES.get(name)
        return read(self.values) if read else self.values.get(name)

    def figures(self, names: Sequence[str]) -> dict[str, Any]:
        """Several figures by name."""
        return {name: self.figure(name) for name in names}

    @property
    def out_of_fold(self) -> bool:
        """Whether the figures are out of fold (a final model on every patient, a release): each patient scored by
        the fold model that held it out, so they speak for the recipe, not for this model."""
        return self.values.get("subset") in (OUT_OF_FOLD, RELEASE_OUT_OF_FOLD)

    @property
    def scored_on(self) -> str:
        """What the figures were measured on, for a label: "Test" or "Out-of-fold"."""
        return "Out-of-fold" if self.out_of_fold else "Test"

    @property
    def validation(self) -> Metrics:
        """The view of the validation subset's metrics."""
        return Metrics.of(self.values.get("validation"))

    def per_class(self) -> pd.DataFrame:
        """One row per class, then the macro and weighted averages: precision, recall, F1, images, and why a
        class's figures are undefined ("" when they are not)."""
        undefined = self.values.get("undefined") or {}
        rows = [
            {
                "class": name,
                "precision": self.values[name]["precision"],
                "recall": self.values[name]["recall"],
                "f1": self.values[name]["f1-score"],
                "images": int(self.values[name]["support"]),
                "undefined": undefined.get(name, ""),
            }
            for name in [*self.values.get("labels", []), *REPORT_AVERAGES]
            if name in self.values
        ]
        return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "images", "undefined"])


_FIGURES_CHECKED = (
    "n",
    "accuracy",
    "balanced_accuracy",
    "mcc",
    "roc_auc",
    "brier",
    "patient_accuracy",
    "patient_sensitivity",
    "patient_specificity",
)
_REPORT_KEYS = ("precision", "recall", "f1-score", "support")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix_problem(metrics: dict[str, Any], name: str) -> str | None:
    """Why the labels, confusion matrix or per-class reports of `metrics` are not what they must be, or None."""
    labels, matrix = metrics.get("labels"), metrics.get("confusion_matrix")
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        return f"{name}['labels'] is {labels!r}, not a list of class names"
    if not (
        isinstance(matrix, list)
        and len(matrix) == len(labels)
        and all(isinstance(row, list) and len(row) == len(labels) and all(_is_number(v) for v in row) for row in matrix)
    ):
        return f"{name}['confusion_matrix'] is not a {len(labels)}x{len(labels)} table of counts"
    for key in [*labels, *REPORT_AVERAGES]:
        report = metrics.get(key)
        if report is not None and not (
            isinstance(report, dict) and all(_is_number(report.get(field)) for field in _REPORT_KEYS)
        ):
            return f"{name}[{key!r}] is not scikit-learn's precision, recall, f1-score and support"
    return None


def metrics_problem(metrics: Any, name: str = "metrics") -> str | None:
    """Why a metrics dict (`metrics.json`, its `validation`, an evaluation's) cannot be shown, or None: every
    figure a number or null, the labels and confusion matrix in step, scikit-learn's per-class report of numbers,
    warnings as text, intervals of numbers. Pages and listings trust a metrics dict that passes."""
    if not isinstance(metrics, dict):
        return f"{name} is a {type(metrics).__name__}, not a JSON object"
    for key in _FIGURES_CHECKED:
        value = metrics.get(key)
        if value is not None and not _is_number(value):
            return f"{name}[{key!r}] is {value!r}, not a number"
    problem = _matrix_problem(metrics, name)
    if problem:
        return problem
    for key in ("warnings", "model_warnings"):
        texts = metrics.get(key)
        if texts is not None and not (isinstance(texts, list) and all(isinstance(text, str) for text in texts)):
            return f"{name}[{key!r}] is not a list of sentences"
    for key in (
        "undefined",
        "majority_baseline",
        "calibration",
        "leakage",
        "subsets",
        "intervals",
        "temperature_scaling",
    ):
        if metrics.get(key) is not None and not isinstance(metrics[key], dict):
            return f"{name}[{key!r}] is {metrics[key]!r}, not a JSON object"
    problem = intervals_problem(metrics.get("intervals") or {})
    if problem:
        return f"{name}['intervals']{problem}"
    if metrics.get("other_subjects") is not None and (problem := other_subjects_problem(metrics["other_subjects"])):
        return f"{name}['other_subjects']{problem}"
    if metrics.get("patients") is not None and not (
        isinstance(metrics["patients"], list) and all(isinstance(row, dict) for row in metrics["patients"])
    ):
        return f"{name}['patients'] is not a list of per-patient rows"
    calibration = metrics.get("calibration")
    if calibration is not None and not (
        _is_number(calibration.get("ece"))
        and all(
            isinstance(calibration.get(k), list) and all(_is_number(v) for v in calibration[k])
            for k in ("prob_pred", "prob_true", "count")
        )
    ):
        return f"{name}['calibration'] is not a reliability diagram (bins of numbers and an ECE)"
    temperature = (metrics.get("temperature_scaling") or {}).get("temperature")
    if temperature is not None and not _is_number(temperature):
        return f"{name}['temperature_scaling']['temperature'] is {temperature!r}, not a number"
    validation = metrics.get("validation")
    return None if validation is None else metrics_problem(validation, f"{name}['validation']")


def other_subjects_problem(section: Any) -> str | None:
    """Why an `other_subjects` section (`pipeline.evaluation.other_subjects`) cannot be shown, or None."""
    if not isinstance(section, dict):
        return " is not a JSON object"
    problem = intervals_problem(section.get("intervals") or {})
    if problem:
        return f"['intervals']{problem}"
    found = section.get("healthy_called_all")
    if not (isinstance(found, dict) and isinstance(found.get("cells"), int) and isinstance(found.get("of"), int)):
        return "['healthy_called_all'] is not a count of cells"
    return None


def intervals_problem(intervals: Any) -> str | None:
    """Why a table of intervals (figure -> `value`, `low`, `high`, `patients`) cannot be shown, or None."""
    if not isinstance(intervals, dict):
        return " is not a JSON object"
    for figure, interval in intervals.items():
        if not (
            isinstance(interval, dict)
            and all(interval.get(k) is None or _is_number(interval[k]) for k in ("value", "low", "high", "patients"))
        ):
            return f"[{figure!r}] is not a value with its low and high"
    return None
