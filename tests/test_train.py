"""End-to-end runs on tiny synthetic data (Lite0, 32 px, random weights): slow, so each run is trained once."""

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline.runs import contract as runs

pytestmark = pytest.mark.slow


def test_a_finished_run_holds_every_file_of_the_contract(finished_run: Path, tiny_data: Path) -> None:
    for name in (runs.CONFIG, runs.STATUS, runs.HISTORY, runs.SPLIT, runs.PREDICTIONS, runs.METRICS, runs.MODEL):
        assert (finished_run / name).is_file(), name
    status = json.loads((finished_run / runs.STATUS).read_text())
    assert status["state"] == "completed" and status["epoch"] == 1 and status["ended_at"]
    config = json.loads((finished_run / runs.CONFIG).read_text())
    assert config["data_dir"] == str(tiny_data) and config["data_layout"] == "cnmc"
    assert config["data_kind"] == "synthetic demo data" and config["weights_used"].startswith("none")
    assert config["split"] == "patient" and config["seed"] == 42
    assert config["tensorflow_version"] and config["keras_version"]
    assert config["device"] == {
        "gpus": 0,
        "precision": "float32",
        "jit_compile": False,
        "replicas": 1,
        "global_batch": 8,
        "per_replica_batch": 8.0,
        "synchronized_batchnorm": False,
    }, "a CPU: no bf16, no XLA, one replica"
    history = pd.read_csv(finished_run / runs.HISTORY)
    assert list(history.columns) == runs.HISTORY_COLUMNS and history["epoch"].tolist() == [1]
    assert 0 < history["learning_rate"].iloc[0] <= 1e-4
    assert not list(finished_run.glob(".*tmp*")), "no temporary file left behind"


def test_split_keeps_patients_apart_and_predictions_cover_the_test_subset(finished_run: Path) -> None:
    split = pd.read_csv(finished_run / runs.SPLIT)
    assert (split.groupby("patient")["subset"].nunique() == 1).all()
    predictions = pd.read_csv(finished_run / runs.PREDICTIONS)
    assert set(predictions["path"]) == set(split.loc[split["subset"] == "test", "path"])
    assert ((predictions["prob_all"] >= 0.5) == (predictions["predicted"] == "ALL")).all()


def test_saved_metrics_equal_scikit_learn_on_saved_predictions(finished_run: Path) -> None:
    predictions = pd.read_csv(finished_run / runs.PREDICTIONS)
    metrics = json.loads((finished_run / runs.METRICS).read_text())
    assert metrics["n"] == len(predictions)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(predictions["label"], predictions["predicted"]))
    assert (
        metrics["confusion_matrix"]
        == confusion_matrix(predictions["label"], predictions["predicted"], labels=["ALL", "HEM"]).tolist()
    )
    assert metrics["weighted avg"]["f1-score"] == pytest.approx(
        f1_score(predictions["label"], predictions["predicted"], average="weighted")
    )


def test_metrics_hold_validation_figures_leakage_and_what_the_subsets_support(finished_run: Path) -> None:
    metrics = json.loads((finished_run / runs.METRICS).read_text())
    split = pd.read_csv(finished_run / runs.SPLIT)
    validation = metrics["validation"]
    assert validation["subset"] == "val" and validation["n"] == (split["subset"] == "val").sum()
    assert set(validation) >= {"accuracy", "balanced_accuracy", "weighted avg", "roc_auc", "confusion_matrix"}
    assert metrics["leakage"] == {"train_test_patients": 0, "train_val_patients": 0, "val_test_patients": 0}
    for subset in ("train", "val", "test"):
        assert metrics["subsets"][subset]["images"] == (split["subset"] == subset).sum()
    assert metrics["calibration"]["bins"] == 10 and 0 <= metrics["calibration"]["ece"] <= 1
    assert isinstance(metrics["warnings"], list)
