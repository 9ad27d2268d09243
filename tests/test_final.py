"""A final model on every patient (split none): it trains on every image, and its figures and temperature are its
cross-validation's out of fold, checked against scikit-learn; folds that are incomplete, of other settings or of
other images are refused before anything trains."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

from pipeline.core.config import TrainConfig
from pipeline.core.errors import PipelineError
from pipeline.data.layouts import Record
from pipeline.data.splits import missing_subset_warning, split_records
from pipeline.evaluation.evaluate import with_temperature
from pipeline.evaluation.run_metrics import run_metrics
from pipeline.explain.report import build_report
from pipeline.inference.export import export_card, readme_card
from pipeline.runs.catalog import model_card
from pipeline.runs.display import held_out_line, images_label, provenance, threshold_line
from pipeline.runs.folder import RunFolder
from pipeline.runs.selection import run_flags
from pipeline.training.final import THRESHOLDS, check_final, out_of_fold_metrics
from tests.helpers import fake_run, make_split

PATIENTS = {f"UID_{n}": ("ALL", "train", 5 + n) for n in range(1, 7)} | {
    f"UID_H{n}": ("HEM", "train", 4 + n) for n in range(1, 7)
}
FOLDS = [("UID_1", "UID_2", "UID_H1", "UID_H2"), ("UID_3", "UID_4", "UID_H3", "UID_H4"), ("UID_5", "UID_6", "UID_H5")]
FOLDS[2] += ("UID_H6",)
FOLD_CONFIG = {"data_dir": "cells", "backbone": "efficientnet_b0", "epochs": 1, "batch_size": 8, "image_size": 32}
TEMPERATURE_OF_FOLD_2 = 2.0


def _fold_split(tested: tuple[str, ...]) -> pd.DataFrame:
    split = make_split(PATIENTS)
    return split.assign(subset=np.where(split["patient"].isin(tested), "test", "train"))


def _cross_validation(
    runs_dir: Path, epochs_of_fold_3: int = 1, state_of_fold_3: str = "completed", data_dir: str = "cells"
) -> pd.DataFrame:
    """Three fake fold runs of group `g` whose test patients partition `PATIENTS`; fold 2 fitted a temperature.
    Returns every fold's test predictions as its model gave them (before any temperature)."""
    raw = []
    for fold, tested in enumerate(FOLDS):
        config = {**FOLD_CONFIG, "data_dir": data_dir, "group": "g", "cv_folds": 3, "cv_fold": fold}
        config["epochs"] = epochs_of_fold_3 if fold == 2 else 1
        state = state_of_fold_3 if fold == 2 else "completed"
        folder = fake_run(runs_dir, f"fold{fold}", state, config, _fold_split(tested), seed=fold, skill=0.15)
        if state != "completed":
            continue
        table = folder.predictions()
        raw.append(table)
        if fold == 1:  # its saved P(ALL) are rescaled by its own temperature, as temperature scaling leaves them
            scaled = table.assign(prob_all=with_temperature(table["prob_all"], TEMPERATURE_OF_FOLD_2).round(9))
            folder.write_predictions(scaled)
            metrics = run_metrics(scaled, None, folder.split())
            folder.write_metrics({**metrics, "temperature_scaling": {"temperature": TEMPERATURE_OF_FOLD_2}})
    return pd.concat(raw, ignore_index=True)


def _final_config(**changes) -> TrainConfig:
    return TrainConfig(**FOLD_CONFIG, split="none", oof_group="g").replace(**changes)


def _every_image() -> pd.DataFrame:
    return make_split(PATIENTS)  # every image in train


def _final_run(runs_dir: Path) -> tuple[RunFolder, dict, pd.DataFrame]:
    """A fake final model after `_cross_validation`: its folder, metrics and out-of-fold predictions."""
    _cross_validation(runs_dir)
    metrics, table = out_of_fold_metrics(_final_config(), _every_image(), runs_dir)
    final = fake_run(runs_dir, "final", config={**FOLD_CONFIG, "split": "none", "oof_group": "g"})
    final.write_split(_every_image())
    final.write_predictions(table)
    final.write_metrics(metrics)
    return final, metrics, table


def test_split_none_trains_on_every_image_and_needs_its_cross_validation() -> None:
    labels = ["ALL" if i % 2 else "HEM" for i in range(40)]
    records = [Record(f"/x/{i}.png", lab, f"UID_{'H' * (lab == 'HEM')}{i % 6}", "") for i, lab in enumerate(labels)]
    split = split_records(records, "none")
    assert set(split["subset"]) == {"train"} and len(split) == 40
    with pytest.raises(PipelineError, match="crossval --final"):
        TrainConfig(data_dir="x", split="none")
    with pytest.raises(PipelineError, match="only a run with --split none"):
        TrainConfig(data_dir="x", oof_group="g")
    assert _final_config().default_name.endswith("-final")


def test_out_of_fold_figures_are_the_folds_predictions_under_one_temperature(tmp_path: Path) -> None:
    raw = _cross_validation(tmp_path).set_index("path")
    metrics, table = out_of_fold_metrics(_final_config(), _every_image(), tmp_path)

    assert sorted(table["path"]) == sorted(_every_image()["path"])  # every image scored once
    raw = raw.loc[table["path"]]
    temperature = metrics["temperature_scaling"]["temperature"]
    assert metrics["temperature_scaling"]["fitted_on"] == "out-of-fold predictions"
    # the fold's own temperature undone, then one temperature for all
    assert np.allclose(table["prob_all"], with_temperature(raw["prob_all"], temperature), atol=2e-6)
    is_all = (raw["label"] == "ALL").to_numpy()

    def loss(t: float) -> float:
        return log_loss(is_all, with_temperature(raw["prob_all"], t), labels=[False, True])

    assert temperature != 1 and loss(temperature) <= min(loss(1.0), loss(temperature * 1.1), loss(temperature / 1.1))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(table["label"] == "ALL", table["prob_all"]))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(table["label"], table["predicted"]))
    assert metrics["n"] == len(table) and metrics["subset"] == "out_of_fold"
    folds = [RunFolder(path) for path in sorted(tmp_path.iterdir())]
    assert metrics["out_of_fold"]["runs"] == [folder.run_id for folder in folds]
    fold_aucs = [folder.metrics()["roc_auc"] for folder in folds]
    assert metrics["out_of_fold"]["fold_mean"]["roc_auc"] == pytest.approx(np.mean(fold_aucs))
    assert missing_subset_warning("validation") not in metrics["warnings"]
    check = metrics["threshold_check"]
    called = {t: np.where(table["prob_all"] >= t, "ALL", "HEM") for t in THRESHOLDS}
    by_hand = {t: balanced_accuracy_score(table["label"], calls) for t, calls in called.items()}
    assert check["best"] in [t for t, score in by_hand.items() if score == max(by_hand.values())]
    assert check["gain_at_best"] == pytest.approx(by_hand[check["best"]] - by_hand[0.5]) and check["used"] == 0.5
    assert threshold_line(check).startswith("Threshold 0.5") and threshold_line({"best": 1}) is None
    assert metrics["subsets"]["test"]["patients"] == {"ALL": 6, "HEM": 6}  # intervals rest on every patient
    assert metrics["intervals"]["roc_auc"]["low"] < metrics["roc_auc"] < metrics["intervals"]["roc_auc"]["high"]


def test_a_final_run_says_its_figures_are_out_of_fold_wherever_they_show(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    final, metrics, table = _final_run(tmp_path / "runs")
    card = model_card(final)
    assert images_label(card)[0] == "Out-of-fold images" and card["scored_on"] == "Out-of-fold"
    line = held_out_line(card)
    assert "nobody" in line and "3-fold" in line and card["test"]["images"] == len(table)
    assert images_label({"split": "patient"})[0] == "Test images"
    shown = provenance(final.config(), markdown=False)
    assert "split: none (a final model on every patient; figures out of fold)" in shown
    report = build_report(final.path, explained=False)
    assert "Held out: nobody" in report and "Out-of-fold figures with 95 % intervals" in report
    assert "test accuracy" not in report and "out-of-fold accuracy" in report
    readme = readme_card(final, export_card(final, "tflite"))
    assert "every patient, out of fold" in readme and "## Figures out of fold" in readme
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    listed = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f"out_of_fold_balanced_acc={metrics['balanced_accuracy']:.3f}" in listed[final.run_id]
    assert "flags: final model: figures out of fold" in listed[final.run_id]
    assert all("test_balanced_acc=" in line for run_id, line in listed.items() if run_id.endswith(("0", "1", "2")))
    assert "final model: figures out of fold" in run_flags({"out_of_fold": True})
    assert "final model" not in run_flags({"out_of_fold": False})


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"state_of_fold_3": "failed"}, "2 of 3 folds completed"),
        ({"epochs_of_fold_3": 2}, "other settings \\(epochs\\)"),
    ],
)
def test_incomplete_or_other_folds_are_refused(tmp_path: Path, damage: dict, message: str) -> None:
    _cross_validation(tmp_path, **damage)
    with pytest.raises(PipelineError, match=message):
        check_final(_final_config(), tmp_path)


def test_other_images_or_settings_or_no_cross_validation_are_refused(tmp_path: Path, monkeypatch) -> None:
    _cross_validation(tmp_path)
    check_final(_final_config(), tmp_path, _every_image())  # the same: no complaint
    monkeypatch.chdir("/")  # the same images named relative to another working folder: still the same
    check_final(_final_config(), tmp_path, _every_image().assign(path=lambda frame: frame["path"].str.lstrip("/")))
    more = pd.concat([_every_image(), make_split({"UID_9": ("ALL", "train", 2)})], ignore_index=True)
    with pytest.raises(PipelineError, match="2 of its images unscored"):
        check_final(_final_config(), tmp_path, more)
    with pytest.raises(PipelineError, match="other settings \\(batch_size\\)"):
        check_final(_final_config(batch_size=16), tmp_path)
    with pytest.raises(PipelineError, match="No cross-validation 'h'"):
        check_final(_final_config(oof_group="h"), tmp_path)


@pytest.mark.slow
def test_crossval_final_trains_every_patient_and_predicts_under_the_out_of_fold_temperature(
    tiny_config, artifacts_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Two tiny folds (Lite0, 32 px, random weights, one epoch), then the final model, through the command line."""
    from pipeline.cli import main
    from pipeline.inference.export import TOLERANCE, export_run
    from pipeline.inference.predict import Predictor

    runs = tmp_path / "runs"
    argv = [
        "crossval",
        "--recipe",
        "paper",
        "--data",
        tiny_config.data_dir,
        "--backbone",
        tiny_config.backbone,
        "--image-size",
        "32",
    ]
    argv += ["--weights", "none", "--epochs", "1", "--batch-size", "8", "--folds", "2", "--final"]
    argv += ["--runs-dir", str(runs)]
    assert main(argv) == 0
    folders = [RunFolder(path) for path in sorted(runs.iterdir()) if path.is_dir()]
    final = next(folder for folder in folders if folder.config()["split"] == "none")
    folds = [folder for folder in folders if folder is not final]
    assert final.status()["state"] == "completed" and final.model_path.is_file()
    assert final.config()["oof_group"] == folds[0].config()["group"] and len(folds) == 2
    every = set(pd.concat([folder.split() for folder in folds])["path"])
    assert set(final.split()["subset"]) == {"train"} and set(final.split()["path"]) == every
    scored = pd.concat([folder.predictions() for folder in folds])
    assert sorted(final.predictions()["path"]) == sorted(scored["path"]) and len(scored) == len(every)
    metrics = final.metrics()
    assert metrics["subset"] == "out_of_fold" and metrics["out_of_fold"]["runs"] == [f.run_id for f in folds]
    assert Predictor.from_run(final.path).temperature == metrics["temperature_scaling"]["temperature"]
    exported = export_run(final.path, "savedmodel")  # checked against its own model: it saved its folds' P(ALL)
    with zipfile.ZipFile(exported) as archive:
        check = json.loads(archive.read("model_card.json"))["check"]
    assert "own model" in check["against"] and check["max_abs_difference"] <= TOLERANCE and check["images"] > 0
    assert main(["evaluate", str(final.path)]) == 2
    assert "has no test subset" in capsys.readouterr().err


def _dashboard(data: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch):
    """The dashboard (AppTest, run once) on `data`, writing under `artifacts`, not in demo mode."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CNMC_DATA_DIR", str(data))
    monkeypatch.setenv("ARTIFACTS_DIR", str(artifacts))
    monkeypatch.delenv("DEMO_MODE", raising=False)
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=60)
    app.run()
    return app


def test_results_and_the_model_card_call_a_final_models_figures_out_of_fold(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import metric

    final, metrics, table = _final_run(tmp_path / "runs")
    app = _dashboard(tiny_data, tmp_path, monkeypatch)
    app.switch_page("pages/results.py").run()
    next(box for box in app.selectbox if box.label == "Run").set_value(final.run_id).run()
    assert not app.exception, [e.value for e in app.exception]
    assert metric(app, "Out-of-fold accuracy") == f"{metrics['accuracy']:.3f}"
    assert not [m for m in app.metric if m.label == "Test accuracy"]
    assert any("Out-of-fold figures with 95 % intervals" in caption.value for caption in app.caption)
    assert any(caption.value == threshold_line(metrics["threshold_check"]) for caption in app.caption)
    app.switch_page("pages/home.py").run()
    app.session_state["run_id"] = final.run_id
    app.run()
    assert any("Held out: nobody" in text.value for text in app.markdown)
    assert metric(app, "Out-of-fold images") == str(len(table))


def test_execute_final_trains_the_final_model_of_the_folds_it_ran(tmp_path: Path, monkeypatch) -> None:
    """The dashboard's background process (`execute RUN... --final`) hands the folds' own settings and group on."""
    from pipeline.cli import main
    from pipeline.training import engines

    _cross_validation(tmp_path / "runs")
    folds = sorted((tmp_path / "runs").iterdir())
    asked = []
    monkeypatch.setattr(engines, "run_all", lambda folders, engine="local", **options: True)
    monkeypatch.setattr(
        engines,
        "train_final",
        lambda config, group, runs_dir, engine, **options: (
            asked.append((config, group, runs_dir, engine)) or fake_run(tmp_path / "elsewhere", "final")
        ),
    )
    assert main(["execute", *map(str, folds), "--final"]) == 0
    ((config, group, runs_dir, engine),) = asked
    assert config == TrainConfig.from_dict(RunFolder(folds[0]).config()) and group == "g"
    assert (runs_dir, engine) == (tmp_path / "runs", "local")
    assert main(["execute", *map(str, folds)]) == 0 and len(asked) == 1  # without --final: no final model


def test_results_trains_the_final_model_of_a_completed_cross_validation(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import record_spawns

    spawned = record_spawns(monkeypatch)
    _cross_validation(tmp_path / "runs", data_dir=str(tiny_data))
    app = _dashboard(tiny_data, tmp_path, monkeypatch)
    app.switch_page("pages/results.py").run()
    assert next(box for box in app.selectbox if box.label == "Cross-validation").value == "g"
    next(button for button in app.button if button.label == "Train the final model on every patient").click().run()
    assert not app.exception, [e.value for e in app.exception]
    ((final,),) = spawned
    config = final.config()
    assert (config["split"], config["oof_group"], config["group"], config["cv_folds"]) == ("none", "g", "g-final", 0)
    fold = RunFolder(next((tmp_path / "runs").glob("*-fold0"))).config()
    assert {key: config[key] for key in ("epochs", "batch_size", "backbone")} == {
        key: fold[key] for key in ("epochs", "batch_size", "backbone")
    }
    app.run()
    assert any(final.run_id in caption.value for caption in app.caption), "the final model is named under its folds"
