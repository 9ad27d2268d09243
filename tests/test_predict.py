"""Predictions as records, and explanations that explain the class shown: a run with test-time augmentation can
call an image one class while a single plain pass would call it the other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import ALL_INDEX, CLASS_NAMES
from pipeline.core.config import ClaheSettings, TrainConfig
from pipeline.data.decode import read_image
from pipeline.evaluation.intervals import patient_bootstrap
from pipeline.inference.evaluate_other import evaluate_run, seen_warning
from pipeline.inference.predict import Predictor
from pipeline.runs import contract as runs
from pipeline.runs.folder import RunFolder

pytestmark = pytest.mark.slow  # builds a Keras model

SIZE = 32


def _orientation_model():
    """P(ALL) rises steeply with how much brighter the left half is than the right, against a bias towards HEM:
    a cell bright on the left is ALL as it stands, but HEM on average over its 8 flips and rotations."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(1, 1, name="top_activation", kernel_initializer="ones", use_bias=False)(inputs)
    flat = keras.layers.Flatten()(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(flat)
    model = keras.Model(inputs, outputs)
    side = np.zeros((SIZE, SIZE), np.float32)
    side[:, : SIZE // 2], side[:, SIZE // 2 :] = 1, -1
    kernel = np.zeros((SIZE * SIZE, 2), np.float32)
    kernel[:, ALL_INDEX] = side.ravel() * 6 / (3 * 255 * SIZE * SIZE / 2)
    kernel[:, 1 - ALL_INDEX] = -kernel[:, ALL_INDEX]  # the right half speaks for HEM
    bias = np.zeros(2, np.float32)
    bias[ALL_INDEX], bias[1 - ALL_INDEX] = -0.5, 0.5
    model.get_layer("predictions").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def tta_predictor():
    from pipeline.inference.predict import Predictor

    config = TrainConfig(
        data_dir="", backbone="efficientnet_b0", image_size=SIZE, tta=True, clahe=ClaheSettings(enabled=False)
    )
    return Predictor(_orientation_model(), config, Path("."))


def test_the_heatmap_explains_the_class_shown_with_tta(tta_predictor) -> None:
    from pipeline.explain.cams import Explainer
    from pipeline.explain.pictures import explain_prediction

    image = np.full((SIZE, SIZE, 3), 60, np.uint8)
    image[:, : SIZE // 2] = 255
    prediction = tta_predictor.predict_image(image)
    single = np.asarray(tta_predictor.model(image[None].astype(np.float32)))[0]
    assert CLASS_NAMES[int(np.argmax(single))] == "ALL", "one plain pass calls it ALL"
    assert prediction.predicted == "HEM" and prediction.class_index == CLASS_NAMES.index("HEM") and prediction.tta
    assert prediction.probability == pytest.approx(1 - prediction.prob_all) and prediction.probability > 0.5
    explainer = Explainer(tta_predictor.model, forward=tta_predictor.forward)
    shown = explain_prediction(explainer, prediction, "layercam")
    for_hem = explainer.heatmap(prediction.input, "layercam", class_index=CLASS_NAMES.index("HEM"))
    for_all = explainer.heatmap(prediction.input, "layercam", class_index=ALL_INDEX)
    np.testing.assert_allclose(shown, for_hem, atol=1e-6)
    assert shown[:, SIZE // 2 :].mean() > shown[:, : SIZE // 2].mean(), "HEM's evidence is the right half"
    assert for_all[:, : SIZE // 2].mean() > for_all[:, SIZE // 2 :].mean(), "the plain pass's class: the left"


def test_saved_model_reproduces_the_saved_probabilities(finished_run: Path) -> None:
    predictions = pd.read_csv(finished_run / runs.PREDICTIONS).head(4)
    predictor = Predictor.from_run(finished_run)
    again = [predictor.predict_image(read_image(path)).prob_all for path in predictions["path"]]
    assert np.allclose(again, predictions["prob_all"], atol=1e-4)


def test_evaluate_on_the_prelim_test_set(finished_run: Path, tiny_data: Path) -> None:
    metrics, out_dir = evaluate_run(finished_run, tiny_data)
    assert metrics["subset"] == "prelim_test" and metrics["n"] == 4
    assert (out_dir / runs.METRICS).is_file() and out_dir.parent.parent == finished_run


def test_evaluate_without_data_scores_the_runs_own_test_subset_as_saved(finished_run: Path) -> None:
    saved = json.loads((finished_run / runs.METRICS).read_text())
    metrics, out_dir = evaluate_run(finished_run)
    assert out_dir == finished_run / "evaluations" / "test-subset" and metrics["subset"] == "test"
    assert json.loads((finished_run / runs.METRICS).read_text()) == saved, "the run's own metrics stay as they were"
    assert metrics["n"] == saved["n"] and metrics["confusion_matrix"] == saved["confusion_matrix"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])


def test_a_bare_model_file_predicts_with_its_own_input_size(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.runs.catalog import run_config
    from pipeline.runs.record import TRAINED_ELSEWHERE

    bare = tmp_path / "elsewhere"
    bare.mkdir()
    shutil.copy(finished_run / runs.MODEL, bare / runs.MODEL)
    predictor = Predictor.from_run(bare)
    assert predictor.config.image_size == 32
    image = read_image(pd.read_csv(finished_run / runs.PREDICTIONS)["path"].iloc[0])
    assert predictor.predict_image(image).prob_all == pytest.approx(
        Predictor.from_run(finished_run).predict_image(image).prob_all, abs=1e-5
    )
    assert run_config(RunFolder(bare)) == TRAINED_ELSEWHERE


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
    shutil.copy(
        test_images[test_images["label"] == "ALL"]["path"].iloc[1],  # another image of a trained patient
        root / "all" / f"{trained_patient}_999_1_all.bmp",
    )
    metrics, out_dir = evaluate_run(finished_run, root)
    assert metrics["excluded_seen_images"] == {"same_path": 1, "same_name": 0, "same_pixels": 1, "seen_patient": 1}
    assert metrics["n"] == 2 and len(pd.read_csv(out_dir / runs.PREDICTIONS)) == 2
    assert metrics["seen_patients"]["n"] == 1, "reported apart, not in the headline"
    assert seen_warning(metrics["excluded_seen_images"]) in metrics["warnings"]
    counted, _ = evaluate_run(finished_run, root, include_seen_patients=True)
    assert counted["n"] == 3 and counted["seen_patients"] is None
    saved = json.loads((out_dir / runs.METRICS).read_text())
    assert saved["intervals"] == patient_bootstrap(pd.read_csv(out_dir / runs.PREDICTIONS)), (
        "evaluate writes the patient-bootstrap intervals of what it scored, as training does"
    )
    assert saved["intervals"]["roc_auc"]["low"] is None and "only" in saved["intervals"]["roc_auc"]["unavailable"]


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


def test_the_seen_warning_names_each_reason_with_its_count_and_only_what_was_left_out() -> None:
    dropped = {"same_path": 2, "same_name": 0, "same_pixels": 1, "seen_patient": 3}
    assert seen_warning(dropped) == "Left out as seen by the run: 2 by same path, 1 by same pixels, 3 by seen patient."
    assert seen_warning(dropped, include_seen_patients=True) == (
        "Left out as seen by the run: 2 by same path, 1 by same pixels."
    )
    assert seen_warning(dict.fromkeys(dropped, 0)) is None
    assert seen_warning({"seen_patient": 4}, include_seen_patients=True) is None, "counted, not left out"
