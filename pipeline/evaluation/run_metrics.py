"""A run's metrics.json from its predictions: test figures, validation figures, what the split supports,
temperature scaling fitted on validation only, warnings about the model first, patient-bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.splits import split_report
from .evaluate import compute_metrics, fit_temperature, metrics_from_predictions, model_warnings, with_temperature
from .intervals import patient_bootstrap


def temperature_scaled(
    validation: pd.DataFrame | None, test: pd.DataFrame
) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame]:
    """(the record of temperature scaling, validation and test predictions with P(ALL) rescaled): the
    temperature is fitted on the validation predictions alone, then applied to both; the classes called stay.
    The record keeps the test subset's calibration before scaling. Without validation images of both classes
    nothing is fitted and the record says why."""
    is_all = None if validation is None else (validation["label"] == "ALL").to_numpy()
    if is_all is None or is_all.all() or not is_all.any():
        held = "no validation subset" if is_all is None else f"validation holds {validation['label'].iloc[0]} only"
        return (
            {
                "temperature": None,
                "fitted_on": "validation",
                "not_fitted": f"temperature scaling needs validation images of both classes ({held})",
            },
            validation,
            test,
        )
    temperature = fit_temperature(is_all, validation["prob_all"].to_numpy())
    before = compute_metrics(test["label"], test["predicted"], test["prob_all"])
    record = {
        "temperature": round(temperature, 6),
        "fitted_on": "validation",
        "validation_images": len(validation),
        "calibration_before": before["calibration"],
        "brier_before": before["brier"],
    }

    def rescaled(table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(prob_all=np.round(with_temperature(table["prob_all"], temperature), 6))

    return record, rescaled(validation), rescaled(test)


def run_metrics(
    test: pd.DataFrame,
    validation: pd.DataFrame | None,
    split: pd.DataFrame,
    tta: bool = False,
    temperature_scaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json of a run from its test and validation predictions and its split: the test figures, the
    validation figures under `validation` (what runs are chosen by), what the split supports (leakage,
    patients per class), the temperature scaling applied (if any) and every warning, those about the model
    itself (constant, one class, no better than a constant answer) first."""
    report = split_report(split)
    metrics = {
        **metrics_from_predictions(test),
        "subset": "test",
        "tta": tta,
        "validation": (
            {**metrics_from_predictions(validation), "subset": "val"}
            if validation is not None and len(validation)
            else None
        ),
        **report,
    }
    integrity = model_warnings(metrics)
    if metrics["validation"]:
        integrity += model_warnings(metrics["validation"], "validation")
    metrics["model_warnings"] = integrity
    metrics["warnings"] = integrity + metrics["warnings"]
    if temperature_scaling is not None:
        metrics["temperature_scaling"] = temperature_scaling
        if temperature_scaling.get("not_fitted"):
            metrics["warnings"].append(f"Probabilities not rescaled: {temperature_scaling['not_fitted']}.")
    metrics["intervals"] = patient_bootstrap(test)  # 95 % intervals: the test figures rest on a few patients
    return metrics
