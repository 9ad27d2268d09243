"""The patient bootstrap: its intervals hold the point estimate, resample patients (not images) and narrow with
more patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from pipeline.evaluation.intervals import FIGURES, format_interval, patient_bootstrap


def _predictions(patients_per_class: int, images: int = 20, seed: int = 0) -> pd.DataFrame:
    patient_rng, image_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    rows = []
    for label, sign in (("ALL", 1), ("HEM", -1)):
        for index in range(patients_per_class):
            shift = patient_rng.normal(0, 0.15)  # patients differ: the variance a bootstrap must see
            prob = np.clip(0.5 + sign * 0.1 + shift + image_rng.normal(0, 0.1, images), 0, 1)
            rows += [{"label": label, "patient": f"{label}{index}", "prob_all": p} for p in prob]
    return pd.DataFrame(rows)


def test_the_interval_holds_the_point_estimate_which_is_scikit_learns() -> None:
    predictions = _predictions(6)
    intervals = patient_bootstrap(predictions, samples=300)
    auc = intervals["roc_auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(predictions["label"] == "ALL", predictions["prob_all"]))
    for figure in intervals.values():
        assert figure["low"] <= figure["value"] <= figure["high"] and figure["patients"] == 12


@pytest.mark.parametrize("seed", range(5))
def test_the_fast_figures_equal_scikit_learns_with_ties_and_uneven_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random(40 + 7 * seed) < 0.3 + 0.1 * seed
    prob = np.round(rng.random(len(truth)), 1)  # ten distinct values: many ties, some exactly 0.5
    assert FIGURES["roc_auc"](truth, prob) == pytest.approx(roc_auc_score(truth, prob), abs=1e-12)
    assert FIGURES["balanced_accuracy"](truth, prob) == pytest.approx(
        balanced_accuracy_score(truth, prob >= 0.5), abs=1e-12
    )


def test_more_patients_narrow_the_interval_and_images_alone_do_not() -> None:
    def width(patients: int, images: int = 20) -> float:
        widths = []
        for seed in range(4):
            auc = patient_bootstrap(_predictions(patients, images, seed), samples=200)["roc_auc"]
            widths.append(auc["high"] - auc["low"])
        return float(np.mean(widths))

    few = width(4)
    assert width(30) < 0.6 * few
    assert width(4, images=200) > 0.7 * few, "ten times the images of the same patients barely narrow it"


def test_one_class_leaves_every_figure_undefined() -> None:
    predictions = _predictions(3).query("label == 'ALL'")
    intervals = patient_bootstrap(predictions, samples=10)
    assert all(figure["value"] is None for figure in intervals.values())
    assert format_interval(intervals["roc_auc"]) == "undefined"
    assert format_interval({"value": 0.874, "low": 0.801, "high": 0.93}) == "0.87, 95 % CI 0.80-0.93"


def test_an_interval_resting_on_fewer_than_three_patients_of_a_class_is_na_with_the_reason() -> None:
    predictions = _predictions(5)
    one_healthy = predictions[(predictions["label"] == "ALL") | (predictions["patient"] == "HEM0")]
    intervals = patient_bootstrap(one_healthy, samples=50)
    for name in ("specificity", "roc_auc", "balanced_accuracy"):  # each rests on the healthy subjects
        figure = intervals[name]
        assert figure["value"] is not None and figure["low"] is None and figure["high"] is None, name
        assert "only 1 HEM subject" in figure["unavailable"], figure
        assert "CI n/a (only 1 HEM subject" in format_interval(figure), "never a zero-width interval"
    sensitivity = intervals["sensitivity"]
    assert sensitivity["low"] <= sensitivity["value"] <= sensitivity["high"], "five ALL patients carry it"
    two_each = patient_bootstrap(predictions[predictions["patient"].isin(["ALL0", "ALL1", "HEM0", "HEM1"])], 50)
    assert "only 2 ALL patients and 2 HEM subjects" in two_each["roc_auc"]["unavailable"]


def test_a_paired_difference_is_scikit_learns_difference_resampled_together() -> None:
    predictions = _predictions(6, seed=3)
    truth = predictions["label"] == "ALL"
    noise = np.random.default_rng(7).normal(0, 0.15, len(predictions))
    worse = np.clip(predictions["prob_all"].to_numpy() + noise, 0, 1)  # the same cells, a noisier model
    paired = patient_bootstrap(predictions, samples=300, baseline=worse)
    expected = roc_auc_score(truth, predictions["prob_all"]) - roc_auc_score(truth, worse)
    assert paired["roc_auc"]["value"] == pytest.approx(expected) and expected > 0
    assert paired["roc_auc"]["low"] <= expected <= paired["roc_auc"]["high"]
    apart = [
        patient_bootstrap(predictions.assign(prob_all=p), samples=300)["roc_auc"]
        for p in (predictions["prob_all"], worse)
    ]
    unpaired = (apart[0]["high"] - apart[0]["low"]) + (apart[1]["high"] - apart[1]["low"])
    assert paired["roc_auc"]["high"] - paired["roc_auc"]["low"] < unpaired, "pairing removes the patients' spread"
    itself = patient_bootstrap(predictions, samples=50, baseline=predictions["prob_all"].to_numpy())
    assert all(f["value"] == 0 and f["low"] == 0 and f["high"] == 0 for f in itself.values())


def test_a_paired_difference_on_too_few_patients_is_na_too() -> None:
    predictions = _predictions(2)
    paired = patient_bootstrap(predictions, samples=50, baseline=np.full(len(predictions), 0.5))
    assert paired["roc_auc"]["low"] is None and "only 2 ALL patients" in paired["roc_auc"]["unavailable"]
