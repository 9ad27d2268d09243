"""Every page run by Streamlit's AppTest against tiny synthetic data and a tiny finished run."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.data.decode import read_image
from pipeline.data.layouts import scan_dataset
from pipeline.inference.predict import Predictor
from pipeline.runs import contract as runs
from tests.helpers import metric, shown_text

pytestmark = pytest.mark.slow  # builds models with TensorFlow

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
TIMEOUT = 180  # TensorFlow and the model load in the page's process


@pytest.fixture
def app(tiny_data: Path, finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _open(app: AppTest, page: str | None = None) -> AppTest:
    app.run()
    if page:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_home_says_which_data_and_that_it_is_no_diagnostic_device(app: AppTest, tiny_data: Path) -> None:
    _open(app)
    assert metric(app, "Images") == str(len(scan_dataset(tiny_data).records))
    assert any("not a diagnostic device" in note.value for note in app.info), "a calm note, not an error box"
    assert not any("not a diagnostic device" in error.value for error in app.error)
    assert any("Synthetic demo data" in warning.value for warning in app.warning)


def test_dataset_counts_classes_and_patients(app: AppTest, tiny_data: Path) -> None:
    _open(app, "pages/dataset.py")
    info = scan_dataset(tiny_data).info()
    assert metric(app, "ALL") == str(info["per_class"]["ALL"])
    assert metric(app, "HEM") == str(info["per_class"]["HEM"])
    assert metric(app, "Patients") == str(info["patients"])
    pager = next(number for number in app.number_input if number.label.startswith("Page"))
    assert f"{info['images']} images" in pager.label


def test_results_show_the_metrics_of_the_run(app: AppTest, finished_run: Path) -> None:
    _open(app, "pages/results.py")
    metrics = json.loads((finished_run / runs.METRICS).read_text())
    run_box = next(box for box in app.selectbox if box.label == "Run")
    run_box.set_value(finished_run.name).run()
    assert metric(app, "Test accuracy") == f"{metrics['accuracy']:.3f}"
    assert metric(app, "Weighted F1") == f"{metrics['weighted avg']['f1-score']:.3f}"
    assert any("synthetic demo data" in warning.value for warning in app.warning)
    assert any("random weights" in info.value for info in app.info)


def test_predict_waits_for_a_choice_then_gives_the_class_and_probability_of_that_image(
    app: AppTest, finished_run: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = Predictor.predict_prepared  # what the page's inference service calls, one batch at a time
    monkeypatch.setattr(
        Predictor,
        "predict_prepared",
        lambda self, prepared, patients: calls.append(1) or original(self, prepared, patients),
    )
    _open(app, "pages/predict.py")
    next(box for box in app.selectbox if box.label == "Model").set_value(finished_run.name).run()
    image_box = next(box for box in app.selectbox if box.label.startswith("…or pick"))
    assert image_box.value is None and not [m for m in app.metric if m.label == "Predicted class"], (
        "nothing predicted before the visitor chooses"
    )
    assert any("Nothing is predicted until" in caption.value for caption in app.caption)
    path = scan_dataset(tiny_data).records[2].path
    chosen = path.split("/")[-1]
    image_box.set_value(path).run()
    expected = Predictor.from_run(finished_run).predict_image(read_image(path))
    assert not app.exception, [e.value for e in app.exception]
    assert metric(app, "Predicted class").startswith(expected.predicted)
    assert metric(app, "P(ALL)") == f"{expected.prob_all:.3f}"
    assert any(shown_text(caption.value) == f"Image: {chosen}" for caption in app.caption), (
        "the caption names the picked image"
    )
    predicted_once = len(calls)
    assert predicted_once >= 1, "the page's answer came from the inference service"
    next(item for item in app.slider if item.label == "Heatmap opacity").set_value(0.3).run()
    assert len(calls) == predicted_once, "moving the opacity slider redraws; it does not predict again"
    on_cell = metric(app, "Map on the cell")
    assert on_cell == "—" or 0 <= int(on_cell.rstrip("%")) <= 100
    assert not any("Faithfulness" in caption.value for caption in app.caption), "extras wait for a click"
    next(toggle for toggle in app.toggle if toggle.label.startswith("Faithfulness")).set_value(True).run()
    assert any("Faithfulness (ROAD)" in caption.value for caption in app.caption)
    assert metric(app, "ROAD").startswith(("+", "-"))
    example = next(button for button in app.button if button.key and button.key.startswith("example-"))
    example_path = example.key.removeprefix("example-")
    example.click().run()
    assert any(shown_text(caption.value) == f"Image: {example_path.split('/')[-1]}" for caption in app.caption)
    picker = next(box for box in app.selectbox if box.label.startswith("…or pick")).value
    assert picker in (None, example_path), "the picker names the image shown, or nothing"


def test_train_page_offers_every_choice_and_a_start_when_idle(app: AppTest) -> None:
    _open(app, "pages/train.py")
    labels = [box.label for box in app.selectbox]
    assert {"Backbone", "Weights", "Split", "Batch size"} <= set(labels)
    assert any(button.label == "Start training" for button in app.button)


def test_demo_mode_switches_training_off(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_MODE", "1")
    _open(app)
    assert any("training is switched off" in info.value for info in app.info)
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # no Train page at all
        app.switch_page("pages/train.py")
    assert not any(button.label == "Start training" for button in app.button)
