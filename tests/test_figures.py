"""Plotly figures built from run-folder tables: the numbers drawn are the numbers saved."""

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.figures import (
    calibration_figure,
    confusion_matrix_figure,
    counts_figure,
    curves_figure,
    histogram_figure,
    overlaid_curves_figure,
    roc_figure,
    sweep_heatmap,
)

METRICS = {"labels": ["ALL", "HEM"], "confusion_matrix": [[30, 10], [5, 15]]}


def test_confusion_matrix_counts_and_row_normalized() -> None:
    counts = confusion_matrix_figure(METRICS).data[0]
    assert np.array_equal(counts.z, [[30, 10], [5, 15]]) and list(counts.x) == ["ALL", "HEM"]
    normalized = confusion_matrix_figure(METRICS, normalized=True).data[0]
    assert np.allclose(normalized.z, [[0.75, 0.25], [0.25, 0.75]])
    assert normalized.text[0][0] == "75.0%"


def test_curves_draw_train_and_validation_when_present() -> None:
    history = pd.DataFrame({"epoch": [1, 2], "accuracy": [0.6, 0.7], "val_accuracy": [0.5, np.nan]})
    figure = curves_figure(history, "accuracy")
    assert [trace.name for trace in figure.data] == ["train accuracy", "val accuracy"]
    assert list(figure.data[0].y) == [0.6, 0.7]
    assert [trace.name for trace in curves_figure(history[["epoch", "accuracy"]], "accuracy").data] == [
        "train accuracy"
    ]
    overlaid = overlaid_curves_figure({"a": history, "b": history.drop(columns="val_accuracy")})
    assert [trace.name for trace in overlaid.data] == ["a"]


def test_roc_figure_ends_at_the_corners_and_names_its_auc() -> None:
    predictions = pd.DataFrame({"label": ["ALL", "ALL", "HEM", "HEM"], "prob_all": [0.9, 0.4, 0.6, 0.1]})
    figure = roc_figure(predictions, 0.75)
    curve = figure.data[0]
    assert (curve.x[0], curve.y[0], curve.x[-1], curve.y[-1]) == (0, 0, 1, 1)
    assert figure.layout.title.text == "ROC AUC 0.750"


def test_sweep_heatmap_places_each_run_in_its_cell_with_its_test_figure_beside() -> None:
    runs = pd.DataFrame(
        {"epochs": [10, 10, 20], "batch_size": [16, 32, 16], "score": [0.8, 0.7, 0.9], "test": [0.5, 0.6, 0.4]}
    )
    cell = sweep_heatmap(runs, "score", "Score", beside="test").data[0]
    assert list(cell.x) == ["10", "20"] and list(cell.y) == ["16", "32"]
    assert cell.z[0][0] == 0.8 and cell.z[0][1] == 0.9 and cell.z[1][0] == 0.7 and np.isnan(cell.z[1][1])
    assert cell.text[0][1] == "0.900<br>test 0.400" and cell.text[1][1] == ""


def test_reliability_diagram_draws_the_saved_bins() -> None:
    calibration = {"prob_pred": [0.1, 0.8], "prob_true": [0.2, 0.7], "count": [10, 30], "ece": 0.1, "bins": 10}
    figure = calibration_figure(calibration)
    assert list(figure.data[1].x) == [0.1, 0.8] and list(figure.data[1].y) == [0.2, 0.7]
    assert figure.layout.title.text == "Reliability (ECE 0.100)"


def test_counts_and_histogram() -> None:
    frame = pd.DataFrame({"fold": ["0", "0", "1"], "label": ["ALL", "HEM", "ALL"]})
    bars = counts_figure(frame, "fold", "t")
    assert sum(sum(trace.y) for trace in bars.data) == 3
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = 200
    histogram = histogram_figure({"a": image})
    assert len(histogram.data[0].x) == 8, "only the cell's (non-black) pixels are counted"
    assert histogram.data[0].x[0] == pytest.approx(200, abs=0.5)


def test_patients_are_dots_at_their_mean_p_all_against_the_half_line() -> None:
    from pipeline.evaluation.evaluate import patient_summary
    from pipeline.evaluation.figures import patient_dots_figure

    predictions = pd.DataFrame(
        {
            "patient": ["UID_1", "UID_1", "UID_H1", "UID_H1", "UID_H1"],
            "label": ["ALL", "ALL", "HEM", "HEM", "HEM"],
            "predicted": ["ALL", "HEM", "HEM", "ALL", "HEM"],
            "prob_all": [0.9, 0.4, 0.2, 0.7, 0.1],
        }
    )
    figure = patient_dots_figure(patient_summary(predictions))
    dots = {trace.name: dict(zip(trace.y, trace.x, strict=True)) for trace in figure.data}
    assert dots["true ALL"]["UID_1"] == pytest.approx(0.65) and dots["true HEM"]["UID_H1"] == pytest.approx(1 / 3)
    assert figure.layout.shapes[0].x0 == 0.5


def test_folds_are_a_strip_with_their_mean_and_the_t_interval_of_the_mean() -> None:
    from scipy import stats

    from pipeline.evaluation.figures import folds_strip_figure
    from pipeline.runs.crossval import fold_mean_intervals

    table = pd.DataFrame(
        {
            "fold": [1, 2, 3, 4],
            "state": ["completed"] * 3 + ["failed"],
            "roc_auc": [0.8, 0.9, 0.7, 0.1],
            "balanced_accuracy": [0.7, 0.8, None, 0.1],
        }
    )
    intervals = fold_mean_intervals(table, ["roc_auc", "balanced_accuracy"])
    done = [0.8, 0.9, 0.7]
    expected = stats.t.interval(0.95, 2, loc=np.mean(done), scale=stats.sem(done))
    assert intervals["roc_auc"] == pytest.approx(expected)
    assert "balanced_accuracy" in intervals and len(intervals) == 2
    figure = folds_strip_figure(table[table["state"] == "completed"], {"roc_auc": "ROC AUC"}, intervals)
    dots, mean = figure.data
    assert list(dots.x) == done and mean.x[0] == pytest.approx(0.8)
    assert mean.error_x.array[0] == pytest.approx(expected[1] - 0.8)


def test_road_scores_are_bars_with_their_spread() -> None:
    from pipeline.evaluation.figures import road_bars_figure

    figure = road_bars_figure(
        {
            "gradcam": {"computed": "Grad-CAM", "road_mean": 0.12, "road_std": 0.05},
            "random": {"computed": "random in the cell", "road_mean": 0.01, "road_std": 0.02},
        }
    )
    bars = figure.data[0]
    assert list(bars.x) == ["Grad-CAM", "random in the cell"] and list(bars.y) == [0.12, 0.01]
    assert list(bars.error_y.array) == [0.05, 0.02]


def test_a_run_with_a_temperature_draws_its_reliability_before_and_after() -> None:
    from pipeline.evaluation.figures import run_calibration_figure

    after = {"prob_pred": [0.2, 0.7], "prob_true": [0.25, 0.65], "count": [20, 20], "ece": 0.05, "bins": 10}
    before = {"prob_pred": [0.05, 0.95], "prob_true": [0.25, 0.65], "count": [20, 20], "ece": 0.25, "bins": 10}
    metrics = {"calibration": after, "temperature_scaling": {"temperature": 2.5, "calibration_before": before}}
    figure = run_calibration_figure(metrics)
    assert [trace.name for trace in figure.data] == [
        "perfectly calibrated",
        "before temperature scaling",
        "after (T = 2.50)",
    ]
    assert list(figure.data[1].x) == [0.05, 0.95] and list(figure.data[2].x) == [0.2, 0.7]
    assert figure.layout.title.text == "Reliability (ECE 0.250 → 0.050)"
    unfitted = {"calibration": after, "temperature_scaling": {"temperature": None, "not_fitted": "one class"}}
    assert [trace.name for trace in run_calibration_figure(unfitted).data] == ["perfectly calibrated", "this model"]
