import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from pipeline.evaluate import compute_metrics, metrics_from_predictions, patient_summary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["ALL", "HEM"], 200, p=[0.68, 0.32])
    prob_all = np.clip((labels == "ALL") * 0.4 + rng.uniform(0, 0.6, 200), 0, 1)
    predicted = np.where(prob_all >= 0.5, "ALL", "HEM")
    metrics = compute_metrics(labels, predicted, prob_all)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["confusion_matrix"] == confusion_matrix(labels, predicted, labels=["ALL", "HEM"]).tolist()
    assert metrics["ALL"]["precision"] == pytest.approx(precision_score(labels, predicted, pos_label="ALL"))
    assert metrics["HEM"]["recall"] == pytest.approx(recall_score(labels, predicted, pos_label="HEM"))
    assert metrics["weighted avg"]["f1-score"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert metrics["macro avg"]["f1-score"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels == "ALL", prob_all))


def test_single_class_has_no_auc() -> None:
    metrics = compute_metrics(["ALL", "ALL"], ["ALL", "HEM"], [0.9, 0.2])
    assert metrics["roc_auc"] is None and metrics["accuracy"] == 0.5


def test_patient_summary_votes_by_mean_probability() -> None:
    table = pd.DataFrame({
        "path": list("abcde"), "patient": ["UID_1", "UID_1", "UID_1", "UID_H2", "unknown"],
        "label": ["ALL", "ALL", "ALL", "HEM", "HEM"], "predicted": ["ALL", "HEM", "ALL", "HEM", "ALL"],
        "prob_all": [0.9, 0.4, 0.8, 0.1, 0.7]})
    summary = patient_summary(table).set_index("patient")
    assert list(summary.index) == ["UID_1", "UID_H2"]
    assert summary.loc["UID_1", "accuracy"] == pytest.approx(2 / 3)
    assert summary.loc["UID_1", "mean_prob_all"] == pytest.approx(0.7)
    assert summary.loc["UID_1", "patient_predicted"] == "ALL"
    assert metrics_from_predictions(table)["patient_accuracy"] == 1.0
