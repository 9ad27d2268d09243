"""Metrics from scikit-learn and per-patient summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from . import DISPLAY_ORDER
from .data import UNKNOWN_PATIENT

THRESHOLD = 0.5


def label_from_prob(prob_all: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    return np.where(np.asarray(prob_all) >= threshold, "ALL", "HEM")


def compute_metrics(labels: Sequence[str], predicted: Sequence[str],
                    prob_all: Sequence[float] | None = None) -> dict[str, Any]:
    """Accuracy, per-class and averaged precision/recall/F1, confusion matrix (rows true, columns predicted,
    in `labels` order) and ROC AUC with ALL as the positive class. Weighted F1 is the C-NMC challenge metric."""
    labels = np.asarray(labels, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    order = list(DISPLAY_ORDER)
    report = classification_report(labels, predicted, labels=order, output_dict=True, zero_division=0)
    metrics: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "labels": order,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=order).tolist(),
    }
    for key in [*order, "macro avg", "weighted avg"]:
        metrics[key] = {name: float(value) for name, value in report[key].items()}
    metrics["roc_auc"] = None
    if prob_all is not None and len(set(labels)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(labels == "ALL", np.asarray(prob_all, dtype=float)))
    return metrics


def roc_points(predictions: pd.DataFrame) -> pd.DataFrame:
    """False and true positive rates (ALL positive) over thresholds, for plotting."""
    if predictions["label"].nunique() < 2:
        return pd.DataFrame(columns=["fpr", "tpr", "threshold"])
    fpr, tpr, thresholds = roc_curve(predictions["label"] == "ALL", predictions["prob_all"])
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def patient_summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per patient: images, true label, share correct, mean probability of ALL and the majority vote."""
    known = predictions[predictions["patient"].astype(str) != UNKNOWN_PATIENT]
    if known.empty:
        return pd.DataFrame(columns=["patient", "label", "images", "accuracy", "mean_prob_all", "patient_predicted"])
    grouped = known.assign(correct=known["label"] == known["predicted"]).groupby("patient")
    summary = pd.DataFrame({
        "label": grouped["label"].agg(lambda values: values.mode().iloc[0]),
        "images": grouped.size(),
        "accuracy": grouped["correct"].mean(),
        "mean_prob_all": grouped["prob_all"].mean(),
    }).reset_index()
    summary["patient_predicted"] = label_from_prob(summary["mean_prob_all"].to_numpy())
    return summary


def metrics_from_predictions(predictions: pd.DataFrame) -> dict[str, Any]:
    """Image-level metrics plus the per-patient summary, from a predictions table."""
    metrics = compute_metrics(predictions["label"], predictions["predicted"], predictions["prob_all"])
    patients = patient_summary(predictions)
    metrics["patients"] = patients.to_dict(orient="records")
    if not patients.empty:
        metrics["patient_accuracy"] = float((patients["label"] == patients["patient_predicted"]).mean())
    return metrics
