"""End-to-end runs on tiny synthetic data (B0, 32 px, random weights): slow, so each run is trained once."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline import runs
from pipeline.errors import PipelineError
from pipeline.predict import Predictor, evaluate_run
from pipeline.preprocess import read_image
from pipeline.train import train
from tests.helpers import wait_for_state

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
    assert config["device"] == {"gpus": 0, "precision": "float32", "jit_compile": False, "replicas": 1,
                                "global_batch": 8, "per_replica_batch": 8.0,
                                "synchronized_batchnorm": False}, "a CPU: no bf16, no XLA, one replica"
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
    assert metrics["confusion_matrix"] == confusion_matrix(
        predictions["label"], predictions["predicted"], labels=["ALL", "HEM"]).tolist()
    assert metrics["weighted avg"]["f1-score"] == pytest.approx(
        f1_score(predictions["label"], predictions["predicted"], average="weighted"))


def test_saved_model_reproduces_the_saved_probabilities(finished_run: Path) -> None:
    predictions = pd.read_csv(finished_run / runs.PREDICTIONS).head(4)
    predictor = Predictor.from_run(finished_run)
    again = [predictor.predict_image(read_image(path)).prob_all for path in predictions["path"]]
    assert np.allclose(again, predictions["prob_all"], atol=1e-4)


def test_evaluate_on_the_prelim_test_set(finished_run: Path, tiny_data: Path) -> None:
    metrics, out_dir = evaluate_run(finished_run, tiny_data)
    assert metrics["subset"] == "prelim_test" and metrics["n"] == 4
    assert (out_dir / runs.METRICS).is_file() and out_dir.parent.parent == finished_run


def test_fast_mode_trains_the_head_on_cached_features_and_saves_a_full_model(tiny_config, artifacts_root) -> None:
    folder = train(tiny_config.replace(freeze_backbone=True, epochs=3, name="fast"), artifacts_root / "runs")
    assert folder.status()["state"] == "completed"
    assert folder.history()["epoch"].tolist() == [1, 2, 3]
    predictor = Predictor.from_run(folder.path)
    assert "top_activation" in [layer.name for layer in predictor.model.layers]


def test_evaluate_without_data_scores_the_runs_own_test_subset_as_saved(finished_run: Path) -> None:
    saved = json.loads((finished_run / runs.METRICS).read_text())
    metrics, out_dir = evaluate_run(finished_run)
    assert out_dir == finished_run / "evaluations" / "test-subset" and metrics["subset"] == "test"
    assert json.loads((finished_run / runs.METRICS).read_text()) == saved, "the run's own metrics stay as they were"
    assert metrics["n"] == saved["n"] and metrics["confusion_matrix"] == saved["confusion_matrix"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])


def test_a_bare_model_file_predicts_with_its_own_input_size(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.catalog import TRAINED_ELSEWHERE, run_config

    bare = tmp_path / "elsewhere"
    bare.mkdir()
    shutil.copy(finished_run / runs.MODEL, bare / runs.MODEL)
    predictor = Predictor.from_run(bare)
    assert predictor.config.image_size == 32
    image = read_image(pd.read_csv(finished_run / runs.PREDICTIONS)["path"].iloc[0])
    assert predictor.predict_image(image).prob_all == pytest.approx(
        Predictor.from_run(finished_run).predict_image(image).prob_all, abs=1e-5)
    assert run_config(runs.RunFolder(bare)) == TRAINED_ELSEWHERE


def test_launch_resume_continues_a_cancelled_run_in_the_background(tiny_config, tmp_path: Path) -> None:
    from pipeline.launch import resume
    from pipeline.train import prepare_run

    folder = prepare_run(tiny_config.replace(epochs=2), tmp_path)
    runs.mark_cancelled([folder])
    resume(folder.path)
    with pytest.raises(PipelineError, match="can be resumed"):
        resume(folder.path)
    status = wait_for_state(folder.path, ("completed", "failed"), timeout_s=300)
    assert status["state"] == "completed", status.get("error")
    assert folder.history()["epoch"].tolist() == [1, 2] and folder.has_model()
    assert "Traceback" not in folder.log_path.read_text()


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


def test_evaluate_on_other_data_never_counts_images_the_run_trained_on(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    split = pd.read_csv(finished_run / runs.SPLIT)
    train_images = split[split["subset"] == "train"]
    test_images = split[split["subset"] == "test"]
    root = tmp_path / "other"
    for label in ("all", "hem"):
        (root / label).mkdir(parents=True)
    seen = train_images[train_images["label"] == "ALL"]["path"].tolist()
    (root / "all" / "link.bmp").symlink_to(seen[0])
    shutil.copy(seen[1], root / "all" / "same-cell-other-name.bmp")
    for label in ("ALL", "HEM"):
        shutil.copy(test_images[test_images["label"] == label]["path"].iloc[0], root / label.lower() / "new.bmp")
    trained_patient = train_images[train_images["label"] == "ALL"]["patient"].iloc[0]
    shutil.copy(test_images[test_images["label"] == "ALL"]["path"].iloc[1],  # another image of a trained patient
                root / "all" / f"{trained_patient}_999_1_all.bmp")
    metrics, out_dir = evaluate_run(finished_run, root)
    assert metrics["excluded_seen_images"] == {"same_path": 1, "same_name": 0, "same_pixels": 1, "seen_patient": 1}
    assert metrics["n"] == 2 and len(pd.read_csv(out_dir / runs.PREDICTIONS)) == 2
    assert metrics["seen_patients"]["n"] == 1, "reported apart, not in the headline"
    assert any(line.startswith("Left out as seen by the run") for line in metrics["warnings"])
    counted, _ = evaluate_run(finished_run, root, include_seen_patients=True)
    assert counted["n"] == 3 and counted["seen_patients"] is None


def test_evaluate_on_data_without_labels_is_one_clear_error(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    from tests.test_cli import cli

    root = tmp_path / "unlabelled"
    (root / "testing_data").mkdir(parents=True)
    (root / "training_data").mkdir()
    shutil.copy(pd.read_csv(finished_run / runs.SPLIT)["path"].iloc[0], root / "testing_data" / "1.bmp")
    result = cli("evaluate", str(finished_run), "--data", str(root))
    last = result.stderr.strip().splitlines()[-1]  # TensorFlow's own start-up lines may come first
    assert result.returncode == 2 and last.startswith("error: ") and "no labelled image" in last
    assert "Traceback" not in result.stderr


def test_training_batches_are_whole_so_batchnorm_never_sees_one_image() -> None:
    from pipeline.datasets import make_dataset, training_steps

    assert training_steps(2257, 16) == (141, True)
    assert training_steps(5, 16) == (1, False)
    images = np.zeros((17, 8, 8, 3), np.uint8)
    batches = [len(x) for x, _ in make_dataset(images, np.zeros(17, np.int32), 16, True, 0, drop_remainder=True)]
    assert batches == [16]


def test_fast_mode_with_augment_trains_on_augmented_feature_passes(tiny_config, artifacts_root, monkeypatch) -> None:
    from pipeline import fit

    shapes = []
    original = fit._augmented_features

    def recorded(model, config, images, labels, folder):
        features = original(model, config, images, labels, folder)
        shapes.append((len(images), len(features)))
        return features

    monkeypatch.setattr(fit, "_augmented_features", recorded)
    folder = train(tiny_config.replace(freeze_backbone=True, augment=True, augment_passes=2, epochs=2,
                                       name="fast-augmented"), artifacts_root / "runs")
    assert folder.status()["state"] == "completed"
    assert len(shapes) == 1 and shapes[0][1] == 2 * shapes[0][0], "two augmented passes over the training images"
    config = folder.config()
    assert config["augment"] is True and config["augment_passes"] == 2 and config["freeze_backbone"] is True


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_an_exported_model_gives_the_runs_probabilities_and_carries_its_card(finished_run: Path, fmt: str) -> None:
    import zipfile

    from pipeline.export import TOLERANCE, export_run

    archive = export_run(finished_run, fmt)
    assert archive.parent == finished_run / "exports" and archive.name.endswith(f"-{fmt}.zip")
    with zipfile.ZipFile(archive) as content:
        names = content.namelist()
        card = json.loads(content.read("model_card.json"))
        readme = content.read("README.md").decode()
    front = dict(line.split(": ", 1) for line in readme.split("---")[1].strip().splitlines())
    assert json.loads(front["license"]) == "apache-2.0" and json.loads(front["library_name"]) == "keras"
    metrics = json.loads(front["model-index"])[0]["results"][0]["metrics"]
    intervals = json.loads((finished_run / "metrics.json").read_text())["intervals"]
    for metric in metrics:  # each figure of the card is the run's, with its interval
        assert metric["value"] == pytest.approx(intervals[metric["type"]]["value"], abs=1e-4)
        assert "95 % CI" in metric["name"]
    assert "not diagnosis" in readme and "CC BY 3.0" in readme and "Keras " in readme
    assert ("model.tflite" in names) == (fmt == "tflite") and any(n.startswith("saved_model/") for n in names) == (
        fmt == "savedmodel")
    assert card["check"]["images"] > 0 and card["check"]["max_abs_difference"] <= TOLERANCE
    assert card["input"]["shape"] == [None, 32, 32, 3] and card["preprocessing"]["clahe"]["clip_limit"] == 2.0
    assert card["output"]["classes"] == ["HEM", "ALL"] and card["held_out_patients"]["test"]


def test_a_tta_run_exports_a_model_that_averages_the_8_views_and_gives_the_runs_saved_probabilities(
        tiny_config, artifacts_root: Path, fmt: str = "savedmodel") -> None:
    """SavedModel only: TFLite goes through the same SavedModel (and the same check) and converts slowly. The run
    also rescales its probabilities by a temperature fitted on validation: the predictor and the export apply it."""
    import zipfile

    import tensorflow as tf

    from pipeline.export import TOLERANCE, export_run
    from pipeline.train import train

    folder = train(tiny_config.replace(tta=True, temperature_scaling=True, name=f"tta-{fmt}"),
                   artifacts_root / "runs")
    scaling = folder.metrics()["temperature_scaling"]
    assert scaling["temperature"] and scaling["validation_images"] > 0, "fitted on a validation of both classes"
    assert scaling["calibration_before"]["ece"] >= 0 and folder.metrics()["calibration"]
    predictor = Predictor.from_run(folder.path)
    assert predictor.temperature == scaling["temperature"]
    first = folder.predictions().iloc[0]
    assert predictor.predict_image(read_image(first["path"])).prob_all == pytest.approx(first["prob_all"], abs=1e-4)
    archive = export_run(folder.path, fmt)
    with zipfile.ZipFile(archive) as content:
        card = json.loads(content.read("model_card.json"))
        if fmt == "savedmodel":
            content.extractall(archive.parent / "unpacked")
    assert card["check"]["test_time_augmentation_inside"] and card["check"]["max_abs_difference"] <= TOLERANCE
    assert card["check"]["temperature_inside"] == scaling["temperature"] and "temperature" in card["output"]["meaning"]
    assert "predictions.csv" in card["check"]["against"]
    if fmt == "savedmodel":  # the exported model itself, fed the run's first test image, gives its saved P(ALL)
        from pipeline.cache import load_images

        predictions = folder.predictions()
        images, _ = load_images(predictions["path"].tolist()[:2], 32, tiny_config.clahe)
        loaded = tf.saved_model.load(str(archive.parent / "unpacked" / "saved_model"))
        exported = np.asarray(loaded.serve(np.asarray(images, np.float32)))[:, 1]
        assert np.abs(exported - predictions["prob_all"].to_numpy()[:2]).max() <= TOLERANCE


def test_onnx_export_says_why_it_is_not_there(finished_run: Path) -> None:
    from pipeline.export import export_run

    with pytest.raises(PipelineError, match="protobuf"):
        export_run(finished_run, "onnx")


def test_the_report_is_one_offline_html_file_with_explained_examples(finished_run: Path) -> None:
    from pipeline.report import write_report

    path = write_report(finished_run)
    text = path.read_text()
    assert path == finished_run / "report.html"
    assert text.count("Plotly.newPlot") >= 4 and not re.search(r"<script[^>]*src=", text), "reads offline"
    assert text.count("data:image/png;base64,") >= 1 and "Per patient" in text and "Held out" in text
