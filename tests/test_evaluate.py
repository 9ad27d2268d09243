import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pipeline.evaluation.evaluate import compute_metrics, metrics_from_predictions, patient_summary


def _sample(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["ALL", "HEM"], n, p=[0.68, 0.32])
    prob_all = np.clip((labels == "ALL") * 0.4 + rng.uniform(0, 0.6, n), 0, 1)
    return labels, np.where(prob_all >= 0.5, "ALL", "HEM"), prob_all


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed: int) -> None:
    labels, predicted, prob_all = _sample(seed)
    metrics = compute_metrics(labels, predicted, prob_all)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["mcc"] == pytest.approx(matthews_corrcoef(labels, predicted))
    assert metrics["confusion_matrix"] == confusion_matrix(labels, predicted, labels=["ALL", "HEM"]).tolist()
    assert metrics["ALL"]["precision"] == pytest.approx(precision_score(labels, predicted, pos_label="ALL"))
    assert metrics["HEM"]["recall"] == pytest.approx(recall_score(labels, predicted, pos_label="HEM"))
    assert metrics["weighted avg"]["f1-score"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert metrics["macro avg"]["f1-score"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels == "ALL", prob_all))
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels == "ALL", prob_all))
    assert metrics["majority_baseline"] == {"class": "ALL", "accuracy": pytest.approx((labels == "ALL").mean())}
    assert metrics["undefined"] == {}


def test_expected_calibration_error_by_hand() -> None:
    labels, predicted, prob_all = _sample(3, 500)
    calibration = compute_metrics(labels, predicted, prob_all)["calibration"]
    gap = 0.0
    for low in np.arange(0, 1, 0.1):
        inside = (prob_all > low) & (prob_all <= low + 0.1) if low > 0 else prob_all <= 0.1
        if inside.any():
            gap += inside.mean() * abs((labels[inside] == "ALL").mean() - prob_all[inside].mean())
    assert calibration["ece"] == pytest.approx(gap, abs=1e-9)
    assert sum(calibration["count"]) == 500 and len(calibration["count"]) == len(calibration["prob_true"])
    perfect = compute_metrics(["ALL", "HEM"] * 50, ["ALL", "HEM"] * 50, [1.0, 0.0] * 50)["calibration"]
    assert perfect["ece"] == 0.0


def test_a_one_class_subset_says_what_is_undefined_instead_of_zero() -> None:
    metrics = compute_metrics(["ALL", "ALL", "ALL"], ["ALL", "HEM", "ALL"], [0.9, 0.2, 0.7])
    assert metrics["roc_auc"] is None and metrics["balanced_accuracy"] is None and metrics["mcc"] is None
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert "no HEM image" in metrics["undefined"]["HEM"] and "only ALL" in metrics["undefined"]["roc_auc"]
    assert metrics["majority_baseline"] == {"class": "ALL", "accuracy": 1.0}


def test_constant_predictions_are_named() -> None:
    metrics = compute_metrics(["ALL", "HEM", "ALL"], ["HEM"] * 3, [0.45, 0.45, 0.4501])
    assert "ignores its input" in metrics["undefined"]["constant"]
    assert "constant" not in compute_metrics(["ALL", "HEM"], ["ALL", "HEM"], [0.9, 0.1])["undefined"]


def test_patient_results_are_named_for_what_they_compute() -> None:
    table = pd.DataFrame(
        {
            "path": list("abcdefg"),
            "patient": ["UID_1", "UID_1", "UID_1", "UID_H2", "UID_H3", "UID_H3", "unknown"],
            "label": ["ALL", "ALL", "ALL", "HEM", "HEM", "HEM", "HEM"],
            "predicted": ["ALL", "HEM", "ALL", "HEM", "ALL", "ALL", "ALL"],
            "prob_all": [0.9, 0.4, 0.8, 0.1, 0.7, 0.6, 0.7],
        }
    )
    summary = patient_summary(table).set_index("patient")
    assert list(summary.index) == ["UID_1", "UID_H2", "UID_H3"]
    assert summary.loc["UID_1", "image_accuracy"] == pytest.approx(2 / 3)
    assert summary.loc["UID_1", "mean_prob_all"] == pytest.approx(0.7)
    assert list(summary["called_by_mean_prob_all"]) == ["ALL", "HEM", "ALL"]
    metrics = metrics_from_predictions(table)
    assert metrics["patients_counted"] == 3
    assert metrics["patient_accuracy"] == pytest.approx(2 / 3)
    assert metrics["patient_sensitivity"] == 1.0 and metrics["patient_specificity"] == 0.5
    only_all = metrics_from_predictions(table[table["label"] == "ALL"])
    assert only_all["patient_specificity"] is None


def test_a_confusion_cell_lists_its_images_most_confident_first() -> None:
    from pipeline.evaluation.evaluate import confusion_cell, patient_errors

    table = pd.DataFrame(
        {
            "path": list("abcdef"),
            "patient": ["P1", "P1", "P2", "H1", "H1", "H2"],
            "label": ["ALL", "ALL", "ALL", "HEM", "HEM", "HEM"],
            "predicted": ["HEM", "HEM", "ALL", "ALL", "HEM", "HEM"],
            "prob_all": [0.45, 0.05, 0.9, 0.8, 0.3, 0.1],
        }
    )
    missed = confusion_cell(table, "ALL", "HEM")
    assert missed["path"].tolist() == ["b", "a"] and missed["confidence"].tolist() == pytest.approx([0.95, 0.55])
    assert confusion_cell(table, "HEM", "ALL")["path"].tolist() == ["d"]
    assert confusion_cell(table, "ALL", "ALL")["confidence"].tolist() == pytest.approx([0.9])
    errors = patient_errors(table)
    assert errors["patient"].tolist()[0] == "P1" and errors.iloc[0]["share_wrong"] == 1.0
    assert errors.set_index("patient").loc["H1", "wrong"] == 1


def test_a_one_class_model_with_varied_probabilities_is_flagged_first() -> None:
    from pipeline.evaluation.run_metrics import run_metrics
    from tests.helpers import make_split

    split = make_split(
        {
            "UID_1": ("ALL", "train", 4),
            "UID_H1": ("HEM", "train", 4),
            "UID_2": ("ALL", "test", 6),
            "UID_H2": ("HEM", "test", 10),
        }
    )
    test = split[split["subset"] == "test"].reset_index(drop=True)
    prob = np.linspace(0.55, 0.95, len(test))  # varied, so not constant, but every image is called ALL
    predictions = test.assign(predicted="ALL", prob_all=prob)
    metrics = run_metrics(predictions, None, split)
    assert metrics["model_warnings"][0].startswith("One-class model on the test subset: every one of its 16 images")
    assert "No better than a constant answer" in metrics["model_warnings"][1]
    assert "always answering HEM scores 0.625" in metrics["model_warnings"][1]
    assert metrics["warnings"][:2] == metrics["model_warnings"], "integrity warnings come first"
    assert "constant" not in metrics["undefined"]


def test_a_model_that_beats_the_constant_answer_is_not_flagged() -> None:
    from pipeline.evaluation.run_metrics import run_metrics
    from tests.helpers import make_split, predictions_for

    split = make_split(
        {
            "UID_1": ("ALL", "train", 4),
            "UID_H1": ("HEM", "train", 4),
            "UID_2": ("ALL", "test", 30),
            "UID_H2": ("HEM", "test", 30),
        }
    )
    metrics = run_metrics(predictions_for(split, "test", skill=0.4), None, split)
    assert metrics["accuracy"] > 0.8 and metrics["model_warnings"] == []


def test_a_one_class_validation_subset_is_not_called_worse_than_a_constant() -> None:
    from pipeline.evaluation.evaluate import compute_metrics, model_warnings

    metrics = compute_metrics(["ALL"] * 10, ["ALL"] * 9 + ["HEM"], [0.9] * 9 + [0.2])
    assert model_warnings(metrics, "validation") == []
    every_one_right = compute_metrics(["ALL"] * 10, ["ALL"] * 10, np.linspace(0.6, 0.9, 10))
    assert model_warnings(every_one_right, "validation") == [], "one class present and called is no one-class model"


def _over_confident(seed: int, n: int = 4000, factor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and P(ALL) whose true log-odds are 2z (z ~ N(+-1, 1)) but are reported as 2 * factor * z."""
    rng = np.random.default_rng(seed)
    is_all = rng.random(n) < 0.5
    z = np.where(is_all, 1.0, -1.0) + rng.normal(0, 1, n)
    return is_all, 1 / (1 + np.exp(-2 * factor * z))


def test_temperature_scaling_finds_the_log_loss_minimum_and_lowers_the_calibration_error() -> None:
    from sklearn.metrics import log_loss

    from pipeline.evaluation.evaluate import calibration, fit_temperature, with_temperature

    is_all, prob_all = _over_confident(0)
    temperature = fit_temperature(is_all, prob_all)
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 400))
    losses = [log_loss(is_all, with_temperature(prob_all, t)) for t in grid]
    assert temperature == pytest.approx(grid[int(np.argmin(losses))], rel=0.02), "the minimum scikit-learn's loss finds"
    assert 2.6 < temperature < 3.4, "the over-confidence put in (3x the true log-odds)"
    scaled = with_temperature(prob_all, temperature)
    assert np.array_equal(scaled >= 0.5, prob_all >= 0.5), "the class called never changes"
    assert calibration(is_all, scaled)["ece"] < calibration(is_all, prob_all)["ece"] / 3
    assert with_temperature(prob_all, None) is not None and np.allclose(with_temperature(prob_all, None), prob_all)


def test_temperature_scaling_refuses_one_class() -> None:
    from pipeline.evaluation.evaluate import fit_temperature

    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.ones(10, bool), np.linspace(0.1, 0.9, 10))


def _table(is_all: np.ndarray, prob_all: np.ndarray, patients: int = 6) -> pd.DataFrame:
    from pipeline.evaluation.evaluate import label_from_prob

    labels = np.where(is_all, "ALL", "HEM")
    patient = [f"{'P' if flag else 'H'}{index % patients}" for index, flag in enumerate(is_all)]
    return pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(len(labels))],
            "patient": patient,
            "label": labels,
            "predicted": label_from_prob(prob_all),
            "prob_all": prob_all,
        }
    )


def test_a_run_fits_its_temperature_on_validation_and_keeps_the_test_calibration_before() -> None:
    from pipeline.evaluation.evaluate import compute_metrics, fit_temperature
    from pipeline.evaluation.run_metrics import temperature_scaled

    validation, test = _table(*_over_confident(1, 600)), _table(*_over_confident(2, 900))
    record, scaled_validation, scaled_test = temperature_scaled(validation, test)
    assert record["temperature"] == pytest.approx(
        fit_temperature(validation["label"] == "ALL", validation["prob_all"]), rel=1e-4
    )
    assert record["validation_images"] == 600
    assert (
        record["calibration_before"]
        == compute_metrics(test["label"], test["predicted"], test["prob_all"])["calibration"]
    )
    assert (scaled_test["predicted"] == test["predicted"]).all()
    after = compute_metrics(scaled_test["label"], scaled_test["predicted"], scaled_test["prob_all"])
    assert after["calibration"]["ece"] < record["calibration_before"]["ece"]
    assert after["roc_auc"] == pytest.approx(
        compute_metrics(test["label"], test["predicted"], test["prob_all"])["roc_auc"], abs=1e-4
    ), "a monotone rescaling keeps the ranking"


def test_a_one_class_validation_fits_no_temperature_and_says_why() -> None:
    from pipeline.evaluation.run_metrics import run_metrics, temperature_scaled

    validation = _table(np.ones(20, bool), np.linspace(0.4, 0.99, 20))
    test = _table(*_over_confident(3, 200))
    record, same_validation, same_test = temperature_scaled(validation, test)
    assert record["temperature"] is None and "ALL only" in record["not_fitted"]
    assert same_test is test and same_validation is validation
    split = pd.concat([test.assign(subset="test"), validation.assign(subset="val")])
    metrics = run_metrics(test, validation, split, temperature_scaling=record)
    assert any("not rescaled" in line for line in metrics["warnings"])


@pytest.mark.parametrize("seed", [0, 4])
def test_the_metrics_view_names_scikit_learns_figures(seed: int) -> None:
    from pipeline.evaluation.metrics import Metrics

    labels, predicted, prob_all = _sample(seed)
    view = Metrics.of(
        {
            **compute_metrics(labels, predicted, prob_all),
            "validation": compute_metrics(labels[:80], predicted[:80], prob_all[:80]),
        }
    )
    assert view.figure("weighted_f1") == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert view.figure("macro_f1") == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert view.figure("weighted_precision") == pytest.approx(precision_score(labels, predicted, average="weighted"))
    assert view.figure("sensitivity") == pytest.approx(recall_score(labels, predicted, pos_label="ALL"))
    assert view.figure("specificity") == pytest.approx(recall_score(labels, predicted, pos_label="HEM"))
    assert view.figure("roc_auc") == pytest.approx(roc_auc_score(labels == "ALL", prob_all))
    assert view.validation.figure("weighted_f1") == pytest.approx(
        f1_score(labels[:80], predicted[:80], average="weighted")
    )
    rows = view.per_class().set_index("class")
    assert list(rows.index) == ["ALL", "HEM", "macro avg", "weighted avg"]
    assert rows.loc["HEM", "recall"] == pytest.approx(recall_score(labels, predicted, pos_label="HEM"))
    assert rows.loc["ALL", "images"] == (labels == "ALL").sum() and (rows["undefined"] == "").all()
    assert Metrics.of(None).figure("weighted_f1") is None and not Metrics.of(None).validation


def test_a_class_absent_from_the_subset_says_why_in_its_row() -> None:
    from pipeline.evaluation.metrics import Metrics

    rows = Metrics.of(compute_metrics(["ALL"] * 5, ["ALL"] * 4 + ["HEM"], None)).per_class().set_index("class")
    assert "no HEM image" in rows.loc["HEM", "undefined"] and rows.loc["ALL", "undefined"] == ""


def test_no_module_but_metrics_reads_scikit_learns_report_layout() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readers = [
        path.relative_to(root).as_posix()
        for folder in ("pipeline", "pages", "bench")
        for path in (root / folder).rglob("*.py")
        if path.as_posix() != (root / "pipeline" / "evaluation" / "metrics.py").as_posix()
        and any(key in path.read_text() for key in ('"weighted avg"', '"macro avg"', '"f1-score"'))
    ]
    assert readers == [], f"read figures through metrics.Metrics instead: {readers}"
