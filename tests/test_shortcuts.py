"""Shortcut baselines and stress transforms: each transform changes what it claims (and nothing it does not), and a
baseline finds a shortcut where one is planted and none where the classes differ only in what it cannot see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.core.errors import PipelineError
from pipeline.data.shortcuts import (
    STRESSES,
    ClassStatistics,
    blur,
    cell_mask,
    colour_stats,
    describe,
    fold_scores,
    out_of_fold,
    patient_folds,
    recolour,
    shortcut_baselines,
    stressed,
    zoom_to_area,
)


def _cell(radius: int, colour: tuple[int, int, int], seed: int = 0, size: int = 96) -> np.ndarray:
    """A textured disc of `colour` on black, like a segmented cell."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
    image = np.zeros((size, size, 3), np.float32)
    image[inside] = np.asarray(colour, np.float32) + rng.normal(0, 12, (inside.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_zooming_a_cell_gives_it_the_area_asked_for_and_keeps_its_colour() -> None:
    cell = _cell(20, (150, 90, 160))
    target = 0.25
    zoomed = zoom_to_area(cell, target)
    assert cell_mask(cell).mean() == pytest.approx(np.pi * 20**2 / 96**2, rel=0.05)
    assert cell_mask(zoomed).mean() == pytest.approx(target, rel=0.05)
    assert np.allclose(colour_stats(zoomed)[0], colour_stats(cell)[0], atol=6)


def test_recolouring_moves_the_cells_colour_and_leaves_its_size_and_background() -> None:
    cell = _cell(25, (150, 90, 160))
    moved = recolour(cell, mean=(100, 120, 200), std=(10, 10, 10))
    mean, std = colour_stats(moved)
    assert np.allclose(mean, (100, 120, 200), atol=2) and np.allclose(std, 10, atol=2)
    assert (cell_mask(moved) == cell_mask(cell)).mean() > 0.99 and not moved[~cell_mask(cell)].any()


def test_blurring_takes_sharpness_away() -> None:
    cell = _cell(25, (150, 90, 160))
    assert describe(blur(cell))["sharpness"] < 0.2 * describe(cell)["sharpness"]


def test_a_stress_moves_a_cell_to_the_other_classs_statistics() -> None:
    small = [_cell(12, (80, 40, 90), seed) for seed in range(4)]
    large = [_cell(28, (170, 120, 190), seed) for seed in range(4)]
    statistics = ClassStatistics.of(pd.DataFrame([describe(cell) for cell in small + large]), ["HEM"] * 4 + ["ALL"] * 4)
    grown = stressed(small[0], "HEM", STRESSES[0], statistics)
    assert cell_mask(grown).mean() == pytest.approx(statistics.area["ALL"], rel=0.05)
    tinted = stressed(small[0], "HEM", STRESSES[1], statistics)
    assert np.allclose(colour_stats(tinted)[0], statistics.colour_mean["ALL"], atol=3)
    with pytest.raises(PipelineError, match="Unknown stress"):
        stressed(small[0], "HEM", "painted", statistics)


def _planted(size_differs: bool, patients: int = 6, cells: int = 6) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Cells of ALL and HEM patients whose classes differ in size (a planted shortcut) or not at all: every cell's
    radius is drawn from one distribution, HEM's shrunk by 10 px when the shortcut is planted."""
    rng = np.random.default_rng(1)
    rows, labels, names = [], [], []
    for label in ("ALL", "HEM"):
        for patient in range(patients):
            for _ in range(cells):
                radius = int(rng.integers(20, 31)) - (10 if size_differs and label == "HEM" else 0)
                rows.append(describe(_cell(radius, (150, 90, 160), int(rng.integers(1 << 30)))))
                labels.append(label)
                names.append(f"{label}{patient}")
    return pd.DataFrame(rows), labels, names


def test_a_planted_size_shortcut_is_found_and_said_and_no_shortcut_is_found_where_there_is_none() -> None:
    descriptors, labels, patients = _planted(size_differs=True)
    found = shortcut_baselines(descriptors, labels, patients, folds=3)
    assert found["cell area"]["roc_auc"] > 0.95 and found["cell area"]["shortcut"]
    descriptors, labels, patients = _planted(size_differs=False)
    found = shortcut_baselines(descriptors, labels, patients, folds=3)
    assert found["cell area"]["roc_auc"] < 0.75 and not found["cell area"]["shortcut"]


def test_patient_folds_never_split_a_patient_and_the_figure_is_the_mean_of_the_folds() -> None:
    is_all = np.array([True] * 12 + [False] * 12)
    patients = np.array([f"A{i // 4}" for i in range(12)] + [f"H{i // 4}" for i in range(12)])
    folds = patient_folds(is_all, patients, 3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(24))
    for test in folds:
        train = np.setdiff1d(np.arange(24), test)
        assert not set(patients[test]) & set(patients[train]), "a patient on both sides of a fold"
        assert is_all[test].any() and (~is_all[test]).any()
    rng = np.random.default_rng(0)
    features = (is_all[:, None] + rng.normal(0, 1, (24, 2))).astype(float)
    prob = out_of_fold(features, is_all, folds)
    scores = fold_scores(is_all, prob, folds)
    assert scores["roc_auc"] == pytest.approx(np.mean([roc_auc_score(is_all[t], prob[t]) for t in folds]))
    assert scores["pooled_roc_auc"] == pytest.approx(roc_auc_score(is_all, prob))
    with pytest.raises(PipelineError, match="cannot fill 4 patient folds"):
        patient_folds(is_all, patients, 4)


def test_within_subject_dependence_is_spearmans_rho_per_subject_and_its_class_summary() -> None:
    from scipy.stats import spearmanr

    from pipeline.data.shortcuts import within_subject_dependence

    rng = np.random.default_rng(4)
    rows = []
    for patient, label, cells in (("H1", "HEM", 12), ("H2", "HEM", 9), ("A1", "ALL", 10), ("A2", "ALL", 2)):
        area, brightness = rng.uniform(0.05, 0.3, cells), rng.uniform(30, 60, cells)
        rows += [
            {"patient": patient, "label": label, "cell_area": a, "brightness": b}
            for a, b in zip(area, brightness, strict=True)
        ]
    table = pd.DataFrame(rows)
    follows = {"H1": 1.0, "H2": -1.0}  # H1's P(ALL) rises with the cell's size, H2's falls; A1's is noise
    table["prob_all"] = [
        0.5
        + follows.get(row.patient, 0.0) * (row.cell_area - 0.15)
        + (rng.normal(0, 0.1) if row.patient[0] == "A" else 0)
        for row in table.itertuples()
    ]
    result = within_subject_dependence(table[["patient", "label", "prob_all"]], table[["cell_area", "brightness"]])
    assert set(result["subjects"]) == {"H1", "H2", "A1"}, "a subject of 2 cells says nothing"
    assert result["subjects"]["H1"]["cell_area"] == pytest.approx(1.0) and result["subjects"]["H2"]["cell_area"] == (
        pytest.approx(-1.0)
    )
    for patient, figures in result["subjects"].items():
        cells = table[table["patient"] == patient]
        assert figures["brightness"] == pytest.approx(spearmanr(cells["brightness"], cells["prob_all"])[0])
    healthy = result["classes"]["HEM"]["cell_area"]
    assert healthy == {
        "mean": pytest.approx(0.0),
        "lowest": pytest.approx(-1.0),
        "highest": pytest.approx(1.0),
        "subjects": 2,
    }
    constant = within_subject_dependence(table.assign(prob_all=0.5), table[["cell_area", "brightness"]])
    assert constant["subjects"]["H1"]["cell_area"] is None and constant["classes"] == {}, "a constant follows nothing"


def test_shortcuts_measures_how_a_runs_saved_answers_follow_cell_size_within_each_subject(
    tiny_data, tmp_path, capsys
) -> None:
    import json

    from pipeline.cli import main
    from pipeline.data.layouts import scan_dataset
    from pipeline.data.shortcuts import describe_files
    from tests.helpers import fake_run

    records = scan_dataset(str(tiny_data)).training_records()
    split = pd.DataFrame(
        {
            "path": [r.path for r in records],
            "patient": [r.patient for r in records],
            "label": [r.label for r in records],
        }
    ).assign(subset="test")
    run = fake_run(tmp_path / "runs", "follows-size", split=split)
    area = describe_files(split["path"].tolist())["cell_area"].to_numpy()
    predictions = run.predictions()
    run.write_predictions(predictions.assign(prob_all=(0.2 + 0.6 * area / area.max()).round(6)))  # size alone
    out = tmp_path / "shortcuts.json"
    assert (
        main(["shortcuts", "--data", str(tiny_data), "--folds", "2", "--run", str(run.path), "--json", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "within each HEM subject" in printed and "cell area +1.00 (+1.00, +1.00)" in printed
    found = json.loads(out.read_text())["within_subject_dependence"][str(run.path)]
    assert {subject["label"] for subject in found["subjects"].values()} == {"ALL", "HEM"}
    assert all(subject["cell_area"] == pytest.approx(1.0) for subject in found["subjects"].values())


def test_described_names_every_column_describe_gives_in_its_order() -> None:
    from pipeline.data.shortcuts import DESCRIBED, describe

    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 12:28] = (180, 90, 200)
    assert tuple(describe(image)) == DESCRIBED
