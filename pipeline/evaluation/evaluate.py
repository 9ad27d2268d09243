"""Metrics from scikit-learn, calibration, and per-patient results. A metric that a subset cannot support
(one class only) is None, and `undefined` says why, instead of a 0 that reads like a result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    log_loss,
    matthews_corrcoef,
    roc_auc_score,
    roc_curve,
)

from .. import DISPLAY_ORDER
from ..data.layouts import UNKNOWN_PATIENT
from .metrics import MACRO_AVERAGE, REPORT_AVERAGES

THRESHOLD = 0.5
CALIBRATION_BINS = 10
CONSTANT_SPREAD = 1e-3
"""Predictions whose P(ALL) spans less than this are (nearly) constant: the model ignores its input."""


def label_from_prob(prob_all: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """'ALL' where P(ALL) reaches `threshold`, else 'HEM'."""
    return np.where(np.asarray(prob_all) >= threshold, "ALL", "HEM")


def calibration(is_all: np.ndarray, prob_all: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability diagram (scikit-learn's `calibration_curve`, equal-width bins of P(ALL)) and the expected
    calibration error: the gap between mean P(ALL) and the share of ALL in each bin, weighted by its images."""
    prob_true, prob_pred = calibration_curve(is_all, prob_all, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], prob_all), minlength=bins)  # the bins calibration_curve uses
    counts = counts[counts > 0]
    ece = float(np.sum(counts / len(prob_all) * np.abs(prob_true - prob_pred)))
    return {
        "bins": bins,
        "prob_pred": prob_pred.round(6).tolist(),
        "prob_true": prob_true.round(6).tolist(),
        "count": counts.tolist(),
        "ece": ece,
    }


CLASS_WEIGHT_NOTE = (
    "This run weighted its classes (or patients) equally in training: that shifts the model's prior "
    "towards 50 % ALL, so its P(ALL) suits a population with as many healthy as leukemic cells, "
    "not the training data's share. Temperature scaling rescales confidence; it does not move "
    "that prior."
)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(is_all: np.ndarray, prob_all: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017) for two classes: the T that minimises the log loss of
    sigmoid(logit(P(ALL)) / T) on `is_all`. T > 1 softens an over-confident model, T < 1 sharpens a timid one;
    the class called never changes (the logit keeps its sign). Needs both classes: on one, the loss falls without
    end as every probability goes to that class."""
    is_all = np.asarray(is_all, bool)
    if is_all.all() or not is_all.any():
        raise ValueError("temperature scaling needs images of both classes")
    logits = logit(np.clip(np.asarray(prob_all, np.float64), 1e-7, 1 - 1e-7))
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: log_loss(is_all, expit(logits / np.exp(log_t)), labels=[False, True]),
        bounds=(low, high),
        method="bounded",
    )
    return float(np.exp(result.x))


def fitted_temperature(metrics: dict[str, Any] | None) -> float | None:
    """The temperature a run fitted (its metrics' `temperature_scaling`), or None when it fitted none."""
    return ((metrics or {}).get("temperature_scaling") or {}).get("temperature")


def with_temperature(prob_all: np.ndarray, temperature: float | None) -> np.ndarray:
    """P(ALL) rescaled by `temperature` (unchanged for None or 1)."""
    prob_all = np.asarray(prob_all, np.float64)
    if not temperature or temperature == 1:
        return prob_all
    return expit(logit(np.clip(prob_all, 1e-7, 1 - 1e-7)) / temperature)


def compute_metrics(
    labels: Sequence[str], predicted: Sequence[str], prob_all: Sequence[float] | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, Matthews correlation, per-class and averaged precision/recall/F1, the
    confusion matrix (rows true, columns predicted, in `labels` order), the best constant classifier; with
    probabilities also ROC AUC (ALL positive), Brier score and calibration. Weighted F1 is the C-NMC metric."""
    labels = np.asarray(labels, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    order = list(DISPLAY_ORDER)
    present = [label for label in order if (labels == label).any()]
    both = len(present) == 2
    report = classification_report(labels, predicted, labels=order, output_dict=True, zero_division=0)
    counts = {label: int((labels == label).sum()) for label in order}
    majority = max(order, key=lambda label: counts[label])
    metrics: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)) if both else None,
        "mcc": float(matthews_corrcoef(labels, predicted)) if both else None,
        "majority_baseline": {"class": majority, "accuracy": counts[majority] / max(1, len(labels))},
        "labels": order,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=order).tolist(),
    }
    for key in [*order, *REPORT_AVERAGES]:
        metrics[key] = {name: float(value) for name, value in report[key].items()}
    undefined = {label: f"no {label} image in this subset" for label in order if label not in present}
    if not both:
        reason = f"only {present[0] if present else 'no'} images in this subset"
        undefined.update({name: reason for name in ("roc_auc", "balanced_accuracy", "mcc", MACRO_AVERAGE)})
    metrics.update({"roc_auc": None, "brier": None, "calibration": None})
    if prob_all is not None and len(labels):
        prob_all = np.asarray(prob_all, dtype=float)
        is_all = labels == "ALL"
        metrics["brier"] = float(brier_score_loss(is_all, prob_all, pos_label=True))
        metrics["calibration"] = calibration(is_all, prob_all)
        metrics["prediction_spread"] = float(prob_all.max() - prob_all.min())
        if metrics["prediction_spread"] < CONSTANT_SPREAD:
            undefined["constant"] = (
                f"every image got P(ALL) = {prob_all.mean():.3f} (spread "
                f"{metrics['prediction_spread']:.1e}): the model ignores its input"
            )
        if both:
            metrics["roc_auc"] = float(roc_auc_score(is_all, prob_all))
    metrics["undefined"] = undefined
    return metrics


def model_warnings(metrics: dict[str, Any], subset: str = "test") -> list[str]:
    """What makes a model's figures worthless on `subset`, in words, most serious first: a constant model,
    a one-class model (every image called one class, however its probabilities vary) and a model no better
    than the best constant answer (on accuracy, or on balanced accuracy, where a constant scores 0.5; only
    where the subset holds both classes, since on one class a constant answer is always right)."""
    warnings = []
    if "constant" in metrics.get("undefined", {}):
        warnings.append(f"Constant model on the {subset} subset: {metrics['undefined']['constant']}.")
    matrix = np.asarray(metrics.get("confusion_matrix") or [[0]])
    called, present = matrix.sum(axis=0), matrix.sum(axis=1)
    if (present > 0).sum() == 2 and (called > 0).sum() == 1:
        label = metrics["labels"][int(np.argmax(called))]
        warnings.append(
            f"One-class model on the {subset} subset: every one of its {metrics['n']} images is called {label}."
        )
    baseline = metrics.get("majority_baseline") or {}
    balanced = metrics.get("balanced_accuracy")
    if balanced is not None and (metrics["accuracy"] <= baseline.get("accuracy", 0) or balanced <= 0.5):
        warnings.append(
            f"No better than a constant answer on the {subset} subset: accuracy {metrics['accuracy']:.3f} where "
            f"always answering {baseline.get('class')} scores {baseline.get('accuracy', 0):.3f}, balanced accuracy "
            f"{balanced:.3f} where a constant scores 0.500."
        )
    return warnings


def roc_points(predictions: pd.DataFrame) -> pd.DataFrame:
    """False and true positive rates (ALL positive) over thresholds, for plotting."""
    if predictions["label"].nunique() < 2:
        return pd.DataFrame(columns=["fpr", "tpr", "threshold"])
    fpr, tpr, thresholds = roc_curve(predictions["label"] == "ALL", predictions["prob_all"])
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


PATIENT_COLUMNS = ["patient", "label", "images", "image_accuracy", "mean_prob_all", "called_by_mean_prob_all"]


def patient_summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per patient: images, true label, share of images right, mean P(ALL) over the patient's images, and the
    patient called ALL when that mean reaches the threshold."""
    known = predictions[predictions["patient"].astype(str) != UNKNOWN_PATIENT]
    if known.empty:
        return pd.DataFrame(columns=PATIENT_COLUMNS)
    grouped = known.assign(correct=known["label"] == known["predicted"]).groupby("patient")
    summary = pd.DataFrame(
        {
            "label": grouped["label"].agg(lambda values: values.mode().iloc[0]),
            "images": grouped.size(),
            "image_accuracy": grouped["correct"].mean(),
            "mean_prob_all": grouped["prob_all"].mean(),
        }
    ).reset_index()
    summary["called_by_mean_prob_all"] = label_from_prob(summary["mean_prob_all"].to_numpy())
    return summary[PATIENT_COLUMNS]


def patient_metrics(summary: pd.DataFrame) -> dict[str, Any]:
    """Patient-level accuracy, sensitivity (ALL patients called ALL) and specificity (healthy subjects called
    HEM) from `patient_summary`; None where there is no patient to count."""
    called = summary["called_by_mean_prob_all"]

    def share(mask: pd.Series) -> float | None:
        return float((called[mask] == summary.loc[mask, "label"]).mean()) if mask.any() else None

    return {
        "patients_counted": int(len(summary)),
        "patient_accuracy": share(summary["label"].notna()),
        "patient_sensitivity": share(summary["label"] == "ALL"),
        "patient_specificity": share(summary["label"] == "HEM"),
    }


def metrics_from_predictions(predictions: pd.DataFrame) -> dict[str, Any]:
    """Image-level metrics plus the per-patient table and patient-level metrics, from a predictions table."""
    metrics = compute_metrics(predictions["label"], predictions["predicted"], predictions["prob_all"])
    patients = patient_summary(predictions)
    metrics["patients"] = patients.to_dict(orient="records")
    metrics.update(patient_metrics(patients))
    return metrics


def confusion_cell(predictions: pd.DataFrame, true: str, predicted: str) -> pd.DataFrame:
    """The images of one confusion-matrix cell, the most confident first: for mistakes, the ones the model was
    surest of (fastai's top losses); `confidence` is the probability the model gave its answer."""
    cell = predictions[(predictions["label"] == true) & (predictions["predicted"] == predicted)].copy()
    cell["confidence"] = np.where(cell["predicted"] == "ALL", cell["prob_all"], 1 - cell["prob_all"])
    return cell.sort_values(["confidence", "path"], ascending=[False, True]).reset_index(drop=True)


def patient_errors(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per patient: images, images wrong, share wrong, mean P(ALL); the patients most often wrong first."""
    frame = predictions.assign(wrong=predictions["label"] != predictions["predicted"])
    grouped = frame.groupby(["patient", "label"])
    table = pd.DataFrame(
        {"images": grouped.size(), "wrong": grouped["wrong"].sum(), "mean_prob_all": grouped["prob_all"].mean()}
    ).reset_index()
    table["share_wrong"] = table["wrong"] / table["images"]
    return table.sort_values(["share_wrong", "images"], ascending=[False, False]).reset_index(drop=True)
