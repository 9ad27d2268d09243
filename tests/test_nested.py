"""Nested patient cross-validation on made-up cells: inner folds never see an outer fold's test patients, every
candidate is scored on the same outer folds, and a planted size shortcut shows up in the baselines and the stress
test. No TensorFlow: the features are drawn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.data.shortcuts import BASELINES, STRESSES
from pipeline.data.splits import cross_validation_folds
from pipeline.training import candidates as candidate_models
from pipeline.training import nested
from pipeline.training.cell_tables import SEED


def _table(patients_per_class: int = 4, cells: int = 10, seed: int = 0) -> candidate_models.CellTable:
    """ALL cells are larger (a planted shortcut) and their features carry both the class and the size; under the
    size stress the size part of the features moves to the other class's."""
    rng = np.random.default_rng(seed)
    rows, is_all, patients = [], [], []
    for label in ("ALL", "HEM"):
        for patient in range(patients_per_class):
            for _ in range(cells):
                rows.append({"cell_area": (0.18 if label == "ALL" else 0.12) + rng.normal(0, 0.01)})
                is_all.append(label == "ALL")
                patients.append(f"{label}{patient}")
    descriptors = pd.DataFrame(rows)
    for column in BASELINES["all of these"]:
        if column not in descriptors:
            descriptors[column] = rng.normal(0, 1, len(descriptors))
    is_all = np.array(is_all)
    signal = np.where(is_all, 0.6, -0.6) + rng.normal(0, 1, len(is_all))
    size = (descriptors["cell_area"].to_numpy() - 0.15) * 100
    features = np.column_stack([signal, size, rng.normal(0, 1, (len(is_all), 6))])
    swapped = descriptors.copy()
    swapped["cell_area"] = np.where(is_all, 0.12, 0.18)
    zoomed = features.copy()
    zoomed[:, 1] = (swapped["cell_area"].to_numpy() - 0.15) * 100
    stressed_features = {STRESSES[0]: zoomed, STRESSES[2]: features}
    stressed_descriptors = {STRESSES[0]: swapped, STRESSES[2]: descriptors}
    normalised = features.copy()
    normalised[:, 1] = 0.0  # every cell at one size: the size part says nothing, clean or zoomed
    augmented = features.copy()
    augmented[:, 1] = rng.uniform(-6, 6, len(is_all))  # a random zoom, whatever the class
    views = {
        candidate_models.SIZE_NORMALISED: {None: normalised, STRESSES[0]: normalised, STRESSES[2]: normalised},
        candidate_models.RANDOM_ZOOM: {None: augmented},
    }
    return candidate_models.CellTable(
        is_all, np.array(patients), features, descriptors, stressed_features, stressed_descriptors, views
    )


def test_inner_choices_never_see_the_outer_test_patients(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table()
    outer = cross_validation_folds(table.labels, table.patients, 3, SEED)
    seen = []
    original = candidate_models.choose_c

    def recording(features, is_all, patients, extra=None):
        seen.append(set(patients))
        if extra is not None:
            assert len(extra) == len(features), "augmented copies only of the inner rows"
        return original(features, is_all, patients, extra)

    monkeypatch.setattr(candidate_models, "choose_c", recording)
    results = nested.nested_cross_validation(table, folds=3)
    assert len(seen) == 9, "one inner choice per outer fold, for each of the three tuned candidates"
    for inner_patients, test in zip(seen, outer * 3, strict=True):
        assert not inner_patients & set(table.patients[test]), "an outer test patient reached an inner fold"
    assert results["test_patients"] == [sorted(set(table.patients[test])) for test in outer]
    chosen = results["candidates"]["logistic regression on features, C chosen on inner folds"]["choices"]
    assert all(choice["C"] in candidate_models.C_GRID for choice in chosen)


def test_every_candidate_is_scored_on_the_same_folds_and_the_shortcut_fails_its_stress() -> None:
    results = nested.nested_cross_validation(_table(), folds=3)
    candidates = results["candidates"]
    views = set(_table().views)
    assert set(candidates) == {
        name for name in candidate_models.CANDIDATES if set(candidate_models.NEEDS.get(name, ())) <= views
    }
    assert candidates["constant answer"]["roc_auc"] == 0.5
    area = candidates["cell area alone (shortcut)"]
    assert area["roc_auc"] > 0.95, "the planted shortcut alone separates the classes"
    assert area["stressed_roc_auc"][STRESSES[0]] < 0.05, "and fails when each cell takes the other class's size"
    assert area["stressed_roc_auc"][STRESSES[2]] == pytest.approx(area["roc_auc"])
    reference = candidates[candidate_models.REFERENCE]
    assert reference["minus_reference_roc_auc"]["mean"] == 0.0
    paired = area["minus_reference_roc_auc"]
    assert paired["folds"] == pytest.approx(np.subtract(area["roc_auc_folds"], reference["roc_auc_folds"]).tolist())
    assert reference["pooled"]["roc_auc"]["value"] == pytest.approx(reference["pooled_roc_auc"])
    assert any("C chosen per fold" in line for line in nested.nested_lines(results))


def test_size_normalised_cells_lose_nothing_when_zoomed_and_the_shortcut_needs_the_view() -> None:
    table = _table(seed=1)
    candidates = nested.nested_cross_validation(table, folds=3)["candidates"]
    plain = candidates["logistic regression on features, C chosen on inner folds"]
    normalised = candidates["logistic regression, C chosen on inner folds, size-normalised cells"]
    augmented = candidates["logistic regression, C chosen on inner folds, + random-zoom copies"]
    zoom = STRESSES[0]
    assert plain["roc_auc"] - plain["stressed_roc_auc"][zoom] > 0.1, "as imaged, the model leans on size"
    assert normalised["stressed_roc_auc"][zoom] == pytest.approx(normalised["roc_auc"])
    assert augmented["stressed_roc_auc"][zoom] > plain["stressed_roc_auc"][zoom], "random zoom leans on size less"
    without = dataclasses.replace(table, views={})
    assert set(nested.nested_cross_validation(without, folds=3)["candidates"]) == set(
        candidate_models.CANDIDATES
    ) - set(candidate_models.NEEDS), "a candidate whose view is missing is left out, not scored on the wrong features"


def _with_focus(table: candidate_models.CellTable, seed: int) -> candidate_models.CellTable:
    """The table with a planted focus feature (column 2 of the size-normalised view): ALL cells are sharper, and
    blurring a cell turns the column into noise; the perturbed view defocuses half of the copies at random, whatever
    their class."""
    rng = np.random.default_rng(seed)
    normalised = table.views[candidate_models.SIZE_NORMALISED][None].copy()
    normalised[:, 2] = np.where(table.is_all, 1.0, -1.0) + rng.normal(0, 0.7, len(table.is_all))
    blurred = normalised.copy()
    blurred[:, 2] = rng.normal(0, 2.0, len(table.is_all))
    perturbed = normalised.copy()
    defocused = rng.random(len(table.is_all)) < 0.5
    perturbed[defocused, 2] = rng.normal(0, 2.0, defocused.sum())
    views = {
        **table.views,
        candidate_models.SIZE_NORMALISED: {None: normalised, STRESSES[0]: normalised, STRESSES[2]: blurred},
        candidate_models.PERTURBED: {None: perturbed},
        candidate_models.PERTURBED_AS_IMAGED: {None: table.features + rng.normal(0, 0.3, table.features.shape)},
    }
    return dataclasses.replace(table, views=views)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_copies_make_a_model_lean_less_on_focus(seed: int) -> None:
    table = _with_focus(_table(patients_per_class=5, cells=20, seed=seed), seed)
    candidates = nested.nested_cross_validation(table, folds=3)["candidates"]
    plain = candidates["logistic regression, C fixed, size-normalised cells (one member of the release)"]
    perturbed = candidates["logistic regression, C fixed, size-normalised cells + perturbed copies"]
    blur = STRESSES[2]
    assert plain["roc_auc"] - plain["stressed_roc_auc"][blur] > 0.1, "the plain model leans on focus"
    assert perturbed["stressed_roc_auc"][blur] > plain["stressed_roc_auc"][blur] + 0.03, "the copies lean on it less"
    without = dataclasses.replace(
        table, views={candidate_models.SIZE_NORMALISED: table.views[candidate_models.SIZE_NORMALISED]}
    )
    assert (
        "logistic regression, C fixed, size-normalised cells + perturbed copies"
        not in (nested.nested_cross_validation(without, folds=3)["candidates"])
    ), "no perturbed view, no candidate trained on it"


def test_the_ensemble_averages_one_regression_per_backbone_each_tuned_on_inner_folds() -> None:
    from pipeline.data.shortcuts import linear_model

    table = _table(seed=0)
    drawn = _table(seed=1)  # the same cells through another backbone: other features, the same labels and patients
    other = dataclasses.replace(
        table, features=drawn.features, stressed_features=drawn.stressed_features, views=drawn.views
    )
    ensemble = dataclasses.replace(table, others={"second": other})
    test = cross_validation_folds(table.labels, table.patients, 3, SEED)[0]
    train = np.setdiff1d(np.arange(len(table.is_all)), test)
    predict, choice = candidate_models._ensemble_model()(train, table.is_all, ensemble, table.patients)
    assert len(choice["C"]) == 2 and all(c in candidate_models.C_GRID for c in choice["C"])
    members = [
        linear_model(c).fit(member.features[train], table.is_all[train]).predict_proba(member.features[test])[:, 1]
        for c, member in zip(choice["C"], (table, other), strict=True)
    ]
    np.testing.assert_allclose(predict(ensemble, test, None), np.mean(members, axis=0))
    zoom = STRESSES[0]
    stressed, clean = predict(ensemble, test, zoom), predict(ensemble, test, None)
    assert not np.allclose(stressed, clean), "stressed features of every member are read"
    results = nested.nested_cross_validation(ensemble, folds=3)["candidates"]
    name = "ensemble: a logistic regression per backbone, C chosen on inner folds"
    assert name in results and f"{name}, size-normalised cells" in results
    assert all(len(fold["C"]) == 2 for fold in results[name]["choices"])
    assert name not in nested.nested_cross_validation(table, folds=3)["candidates"], "no ensemble of one backbone"


@pytest.mark.slow
def test_the_nested_command_runs_on_real_cells_and_writes_its_table(tmp_path, monkeypatch) -> None:
    """`pipeline nested` end to end on the embedded real sample: features of every cell clean and under each stress
    (Lite0 at a tiny size, ImageNet weights from the package), the candidates scored on 3 patient folds, JSON."""
    import json

    from pipeline.cli import main
    from pipeline.core.config import EMBEDDED_SAMPLE

    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    out = tmp_path / "nested.json"
    args = ["nested", "--data", str(EMBEDDED_SAMPLE), "--image-size", "32", "--no-views", "--no-keras-head"]
    assert main([*args, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["cells"] == 441 and results["ensemble"] == [] and results["folds"] == 3
    assert set(results["candidates"]) == set(candidate_models.CANDIDATES) - set(candidate_models.NEEDS), (
        "no view, Keras or ensemble"
    )
    area = results["candidates"]["cell area alone (shortcut)"]
    assert area["roc_auc"] > 0.75 and area["stressed_roc_auc"][STRESSES[0]] < 0.2, "the sample's size shortcut"


def test_an_ensembles_other_backbones_need_only_the_member_views() -> None:
    """`nested --ensemble` extracts only `MEMBER_VIEWS` for the other backbones (no random-zoom copies nobody reads),
    and every ensemble candidate is still scored."""
    table = _with_focus(_table(seed=0), 0)
    drawn = _with_focus(_table(seed=1), 1)
    other = dataclasses.replace(
        table,
        features=drawn.features,
        stressed_features=drawn.stressed_features,
        views={view: drawn.views[view] for view in candidate_models.MEMBER_VIEWS},
    )
    assert candidate_models.RANDOM_ZOOM not in candidate_models.MEMBER_VIEWS
    results = nested.nested_cross_validation(dataclasses.replace(table, others={"second": other}), folds=3)
    ensembles = {name for name, needs in candidate_models.NEEDS.items() if "others" in needs}
    assert ensembles <= set(results["candidates"]), "an ensemble candidate lost a view it reads"
    alone = {name for name, needs in candidate_models.NEEDS.items() if candidate_models.RANDOM_ZOOM in needs}
    assert alone <= set(results["candidates"]), "one backbone's candidates need their view on that backbone only"
    clean = dataclasses.replace(other, stressed_features={}, stressed_descriptors={})
    unstressed = nested.nested_cross_validation(dataclasses.replace(table, others={"second": clean}), folds=3)
    for name, scores in unstressed["candidates"].items():
        if name in ensembles:
            assert scores["stressed_roc_auc"] == {}, "members measured clean: the ensemble is not stressed"
        elif name != "constant answer":
            assert scores["stressed_roc_auc"] == results["candidates"][name]["stressed_roc_auc"]
