"""Results and Home against hand-made run folders (no TensorFlow): validation chooses, leakage and weak test
subsets are shown where the figures are, undefined figures say so, cross-validation is summarised."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.runs.crossval import write_summary
from tests.helpers import DEFAULT_SPLIT, fake_run, make_split, metric

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@pytest.fixture
def runs_dir(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNMC_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    return tmp_path / "runs"


def _open(page: str, run_id: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page(page).run()
    if run_id:
        next(box for box in app.selectbox if box.label == "Run").set_value(run_id).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_best_run_is_chosen_on_validation_and_shown_with_its_test_score(runs_dir: Path) -> None:
    good_on_val = fake_run(runs_dir, "good-on-val", seed=1, skill=0.45)
    good_on_test = fake_run(runs_dir, "good-on-test", seed=2, skill=0.1)
    other_data = fake_run(runs_dir, "other-data", seed=3, skill=0.49, config={"data_dir": "/elsewhere"})
    val_scores = {
        f.run_id: f.metrics()["validation"]["balanced_accuracy"] for f in (good_on_val, good_on_test, other_data)
    }
    assert val_scores[good_on_val.run_id] > val_scores[good_on_test.run_id]
    app = _open("pages/home.py")
    app.session_state["run_id"] = good_on_test.run_id  # the model in use decides which runs are comparable
    app.run()
    assert metric(app, "Best validation balanced accuracy") == f"{val_scores[good_on_val.run_id]:.3f}"
    test_score = good_on_val.metrics()["balanced_accuracy"]
    assert any(
        good_on_val.run_id in c.value
        and "among 2 comparable run(s)" in c.value
        and f"its test balanced accuracy: {test_score:.3f}" in c.value
        for c in app.caption
    )


def test_an_image_split_shows_its_leakage_next_to_the_metrics(runs_dir: Path) -> None:
    leaky = make_split(
        {
            "UID_1": ("ALL", "train", 4),
            "UID_H1": ("HEM", "train", 4),
            "UID_2": ("ALL", "val", 2),
            "UID_H2": ("HEM", "val", 2),
        }
    )
    leaky = leaky.assign(subset=["train", "test"] * 4 + ["val"] * 4)
    folder = fake_run(runs_dir, "image-split", config={"split": "image"}, split=leaky)
    assert folder.metrics()["leakage"]["train_test_patients"] == 2
    app = _open("pages/results.py", folder.run_id)
    assert any("2 patient(s) have images in both the training and the test subset" in e.value for e in app.error)
    assert metric(app, "Test accuracy") == f"{folder.metrics()['accuracy']:.3f}"
    assert metric(app, "Validation weighted F1") == f"{folder.metrics()['validation']['weighted avg']['f1-score']:.3f}"
    assert any("Test figures with 95 % intervals" in caption.value for caption in app.caption)


def test_a_test_subset_of_one_class_says_what_is_undefined(runs_dir: Path) -> None:
    one_class = make_split({**DEFAULT_SPLIT, "UID_H3": ("HEM", "train", 3)})
    folder = fake_run(runs_dir, "one-class-test", split=one_class)
    app = _open("pages/results.py", folder.run_id)
    assert metric(app, "ROC AUC") == "undefined" and metric(app, "Balanced accuracy") == "undefined"
    assert any("test subset has no HEM image" in w.value for w in app.warning)
    per_class = next(frame.value for frame in app.dataframe if "precision" in frame.value.columns)
    assert per_class.loc["HEM", "precision"] == "no HEM image in this subset"


def test_cross_validation_is_summarised_as_mean_and_spread_over_folds(runs_dir: Path) -> None:
    folders = [
        fake_run(runs_dir, f"fold{k}", seed=k, config={"group": "cv3-x", "cv_folds": 3, "cv_fold": k}) for k in range(3)
    ]
    write_summary("cv3-x", folders)
    app = _open("pages/results.py")
    summary = next(frame.value for frame in app.dataframe if "folds with a value" in frame.value.columns)
    accuracy = summary.set_index("metric").loc["accuracy"]
    values = [folder.metrics()["accuracy"] for folder in folders]
    assert accuracy["mean"] == pytest.approx(sum(values) / 3) and accuracy["folds with a value"] == 3
    per_fold = next(frame.value for frame in app.dataframe if "test_patients" in frame.value.columns)
    assert per_fold["fold"].tolist() == [1, 2, 3]
    assert any(
        caption.value.startswith("Every patient's test predictions pooled over the folds, 95 % intervals")
        for caption in app.caption
    )


def test_a_confusion_cell_shows_its_images_most_confident_first(runs_dir: Path) -> None:
    import pandas as pd

    from pipeline.core.config import EMBEDDED_SAMPLE
    from pipeline.data.layouts import scan_dataset
    from pipeline.evaluation.evaluate import confusion_cell

    records = scan_dataset(EMBEDDED_SAMPLE).labelled[::7]
    split = pd.DataFrame(
        [
            {"path": r.path, "patient": r.patient, "label": r.label, "subset": ("train", "val", "test")[index % 3]}
            for index, r in enumerate(records)
        ]
    )
    folder = fake_run(runs_dir, "gallery", split=split, skill=0.05)
    predictions = folder.predictions()
    app = _open("pages/results.py", folder.run_id)
    cells = app.button_group[0]
    expected = confusion_cell(predictions, "HEM", "HEM")
    assert f"HEM called HEM · {len(expected)}" in cells.options
    cells.set_value(next(option for option in cells.options if option.startswith("HEM called HEM"))).run()
    captions = [image.proto.imgs[0].caption for image in app.get("image") if "sure" in image.proto.imgs[0].caption]
    assert captions[0].startswith(f"{expected['patient'][0]} · P(ALL) {expected['prob_all'][0]:.2f}")
    sure = [float(caption.rsplit("sure ", 1)[1].rstrip("%")) for caption in captions]
    assert sure == sorted(sure, reverse=True) and len(captions) == min(24, len(expected))
    errors = next(frame.value for frame in app.dataframe if "share_wrong" in frame.value.columns)
    assert set(errors["patient"]) == set(predictions["patient"])


def test_a_model_worse_than_a_constant_answer_says_so_on_home_and_predict(runs_dir: Path) -> None:
    split = make_split(
        {
            "UID_1": ("ALL", "train", 4),
            "UID_H1": ("HEM", "train", 4),
            "UID_2": ("ALL", "val", 6),
            "UID_H2": ("HEM", "val", 6),
            "UID_3": ("ALL", "test", 12),
            "UID_H3": ("HEM", "test", 12),
        }
    )
    fake_run(runs_dir, "backwards", split=split, skill=-0.3)  # leans to the wrong class
    for page in ("pages/home.py", "pages/predict.py"):
        app = _open(page)
        shown = [warning.value for warning in app.warning]
        assert any(text.startswith("No better than a constant answer on the test subset") for text in shown), page


def test_the_road_ranking_of_a_run_is_drawn_as_bars_and_a_table(runs_dir: Path) -> None:
    from pipeline.core.files import write_json_atomic

    folder = fake_run(runs_dir, "explained")
    methods = {
        "gradcam": {"computed": "Grad-CAM", "road_mean": 0.12, "road_std": 0.05},
        "random-in-cell": {"computed": "random-in-cell", "road_mean": 0.01, "road_std": 0.02},
    }
    write_json_atomic(
        folder.explanations_dir() / "road-top_activation.json",
        {"layer": "top_activation", "images": 4, "fractions": [0.1], "methods": methods},
    )
    app = _open("pages/results.py", folder.run_id)
    ranking = next(frame.value for frame in app.dataframe if "ROAD" in frame.value.columns)
    assert ranking["method"].tolist() == ["Grad-CAM", "random-in-cell"]
    assert any("ROAD at top_activation" in text.value for text in app.markdown)
