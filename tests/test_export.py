"""Exports of a run (SavedModel, TFLite) that reproduce its saved probabilities and carry its card."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.decode import read_image
from pipeline.inference.predict import Predictor
from pipeline.training.train import train

pytestmark = pytest.mark.slow


def test_an_exported_model_gives_the_runs_probabilities_and_carries_its_card(
    finished_run: Path, fmt: str = "tflite"
) -> None:
    """TFLite: its export makes the SavedModel first and checks the converted model against the run's saved
    probabilities; the SavedModel archive itself is the TTA test's below."""
    import zipfile

    from pipeline.inference.export import TOLERANCE, export_run

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
        fmt == "savedmodel"
    )
    assert card["check"]["images"] > 0 and card["check"]["max_abs_difference"] <= TOLERANCE
    assert card["input"]["shape"] == [None, 32, 32, 3] and card["preprocessing"]["clahe"]["clip_limit"] == 2.0
    assert card["output"]["classes"] == ["HEM", "ALL"] and card["held_out_patients"]["test"]


def test_a_tta_run_exports_a_model_that_averages_the_8_views_and_gives_the_runs_saved_probabilities(
    tiny_config, artifacts_root: Path, fmt: str = "savedmodel"
) -> None:
    """SavedModel only: TFLite goes through the same SavedModel (and the same check) and converts slowly. The run
    also rescales its probabilities by a temperature fitted on validation: the predictor and the export apply it."""
    import zipfile

    import tensorflow as tf

    from pipeline.inference.export import TOLERANCE, export_run

    folder = train(tiny_config.replace(tta=True, temperature_scaling=True, name=f"tta-{fmt}"), artifacts_root / "runs")
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
        from pipeline.data.cache import load_images

        predictions = folder.predictions()
        images, _ = load_images(predictions["path"].tolist()[:2], 32, tiny_config.clahe)
        loaded = tf.saved_model.load(str(archive.parent / "unpacked" / "saved_model"))
        exported = np.asarray(loaded.serve(np.asarray(images, np.float32)))[:, 1]
        assert np.abs(exported - predictions["prob_all"].to_numpy()[:2]).max() <= TOLERANCE


def test_onnx_export_says_why_it_is_not_there(finished_run: Path) -> None:
    from pipeline.inference.export import export_run

    with pytest.raises(PipelineError, match="protobuf"):
        export_run(finished_run, "onnx")
