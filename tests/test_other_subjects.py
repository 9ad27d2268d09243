"""The other-subject check: its cells are refused when they share a subject with the training data, its figures
agree with scikit-learn, no fit ever reads them, and the selection rule gates on them as written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from pipeline.core.errors import PipelineError
from pipeline.data.check_cells import check_cells
from pipeline.evaluation.evaluate import metrics_from_predictions
from pipeline.evaluation.metrics import metrics_problem
from pipeline.evaluation.other_subjects import SECTION, OtherSubjects, check_section
from pipeline.training import nested, rule
from pipeline.training.candidates import REFERENCE
from pipeline.training.rule import kind_of
from tests.helpers import make_check_folder, make_split, predictions_for
from tests.test_nested import _table, _with_focus


def test_a_check_that_shares_a_subject_with_the_training_data_is_refused_naming_it(tmp_path: Path) -> None:
    folder = make_check_folder(tmp_path / "check", subjects=2, cells=1)
    cells = check_cells(folder, ["UID_907", "UID_H9"])
    assert len(cells) == 4 and set(cells["label"]) == {"ALL", "HEM"}
    assert all(Path(path).is_absolute() for path in cells["path"])
    with pytest.raises(PipelineError, match="shares 2 subject.*UID_901, UID_H902"):
        check_cells(folder, ["UID_901", "UID_H902", "UID_5"])


def test_a_check_folder_that_cannot_support_a_check_says_why(tmp_path: Path) -> None:
    folder = make_check_folder(tmp_path / "check", subjects=1, cells=1)
    for path in (folder / "hem").iterdir():
        path.unlink()
    with pytest.raises(PipelineError, match="ALL cells only"):
        check_cells(folder, [])
    (folder / "hem" / "cell.png").write_bytes((folder / "all").iterdir().__next__().read_bytes())
    with pytest.raises(PipelineError, match="name no subject"):
        check_cells(folder, [])
    with pytest.raises(PipelineError):
        check_cells(tmp_path / "missing", [])


def _predictions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for label, subjects in (("ALL", ["A1", "A2", "A3", "A4"]), ("HEM", ["H1", "H2", "H3"])):
        for subject in subjects:
            for cell in range(3):
                centre = 0.65 if label == "ALL" else 0.4
                rows.append(
                    {
                        "path": f"/x/UID_{subject}_1_{cell}_{label.lower()}.png",
                        "patient": subject,
                        "label": label,
                        "prob_all": float(np.clip(rng.normal(centre, 0.2), 0, 1)),
                    }
                )
    return pd.DataFrame(rows)


def test_the_check_section_agrees_with_scikit_learn_and_counts_healthy_cells_called_all_per_subject() -> None:
    predictions = _predictions()
    reference = np.clip(predictions["prob_all"].to_numpy() + np.random.default_rng(1).normal(0, 0.2, 21), 0, 1)
    section = check_section(predictions, reference, "somewhere")
    truth = predictions["label"] == "ALL"
    assert section["roc_auc"]["value"] == pytest.approx(roc_auc_score(truth, predictions["prob_all"]))
    assert section["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(truth, predictions["prob_all"] >= 0.5)
    )
    assert section["roc_auc"]["low"] < section["roc_auc"]["value"] < section["roc_auc"]["high"]
    healthy = predictions[~truth]
    assert section["healthy_called_all"]["cells"] == int((healthy["prob_all"] >= 0.5).sum())
    assert section["healthy_called_all"]["of"] == 9
    for subject, row in section["healthy_called_all"]["per_subject"].items():
        assert row["called_all"] == int((healthy.loc[healthy["patient"] == subject, "prob_all"] >= 0.5).sum())
    paired = section["reference"]["paired"]["roc_auc"]["value"]
    assert paired == pytest.approx(roc_auc_score(truth, predictions["prob_all"]) - roc_auc_score(truth, reference))
    assert section["subjects"] == {"ALL": 4, "HEM": 3} and len(section["predictions"]) == 21
    view = OtherSubjects.of({SECTION: section})
    assert view is not None and view.healthy == (section["healthy_called_all"]["cells"], 9)
    assert "subjects of other folds, never trained on" in "\n".join(view.lines())
    assert OtherSubjects.of({"n": 3}) is None, "a run folder without the section reads as before"


def test_a_damaged_check_section_makes_the_metrics_unreadable_with_the_reason() -> None:
    split = make_split({"A1": ("ALL", "test", 4), "A2": ("ALL", "test", 4), "H1": ("HEM", "test", 4)})
    metrics = metrics_from_predictions(predictions_for(split, "test"))
    section = check_section(_predictions(), None, "somewhere")
    assert metrics_problem({**metrics, SECTION: section}) is None
    assert "other_subjects" in metrics_problem({**metrics, SECTION: "text"})
    damaged = {**section, "healthy_called_all": {"cells": "3"}}
    assert "healthy_called_all" in metrics_problem({**metrics, SECTION: damaged})


def _check_table(seed: int) -> nested.CellTable:
    """Cells of other subjects: drawn like the training table's, under other names."""
    table = _with_focus(_table(patients_per_class=3, cells=4, seed=seed), seed)
    return dataclasses.replace(table, patients=np.array([f"check-{name}" for name in table.patients]))


def test_no_fit_ever_reads_a_check_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _with_focus(_table(seed=0), 0)
    other = _with_focus(_table(seed=1), 1)
    table = dataclasses.replace(table, others={"second": other})
    check = _check_table(5)
    check = dataclasses.replace(check, others={"second": _check_table(6)})
    check_rows = [
        check.features,
        check.descriptors.to_numpy(float),
        *[view[None] for view in check.views.values()],
        check.others["second"].features,
    ]
    fitted: list[np.ndarray] = []
    for cls in (LogisticRegression, StandardScaler):
        original = cls.fit

        def spy(self, x, *args, _original=original, **kwargs):
            fitted.append(np.asarray(x, float))
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", spy)
    results = nested.nested_cross_validation(table, folds=3, check=check)
    assert fitted, "the spies saw the fits"
    for inputs in fitted:
        for rows in check_rows:
            width = min(inputs.shape[1], rows.shape[1])
            matches = (inputs[:, None, :width] == rows[None, :, :width]).all(axis=2)
            assert not matches.any(), "a check cell reached a fit"
    probabilities = results["check_probabilities"]
    assert set(probabilities) == set(results["candidates"])
    assert all(len(values) == len(check.is_all) for values in probabilities.values())
    cells = pd.DataFrame({"path": [f"/c/{i}.png" for i in range(len(check.is_all))], "patient": check.patients})
    nested.attach_check(results, cells.assign(label=check.labels), "check")
    reference = results["candidates"][REFERENCE]["check"]
    assert reference["reference"]["paired"]["roc_auc"]["value"] == 0.0, "the reference is paired with itself"
    assert reference["roc_auc"]["value"] == pytest.approx(roc_auc_score(check.is_all, probabilities[REFERENCE]))
    assert results["candidates"][REFERENCE]["gate"]["passed"], "the reference always passes its own gate"
    assert results["rule"]["release"]["chosen"] in results["rule"]["release"]["passed"]
    lines = "\n".join(nested.nested_lines(results))
    assert "check: ROC AUC" in lines and "The rule's choice for the release" in lines


def _candidate(roc_auc: float, check_auc: float, healthy: int, reference_auc: float = 0.78, allowed: int = 6):
    section = {
        "roc_auc": {"value": check_auc},
        "healthy_called_all": {"cells": healthy, "of": 18},
        "reference": {"roc_auc": {"value": reference_auc}, "healthy_called_all": {"cells": allowed}},
    }
    return {"roc_auc": roc_auc, "check": section, "gate": rule.gate(section)}


def test_the_rule_gates_on_the_check_ranks_by_nested_cv_and_breaks_ties_towards_the_simpler() -> None:
    candidates = {
        REFERENCE: _candidate(0.80, 0.78, 6),
        "logistic regression on features, C chosen on inner folds": _candidate(0.87, 0.65, 9),
        "logistic regression on features, C = 0.1": _candidate(0.805, 0.77, 6),
        "ensemble: a logistic regression per backbone, C fixed": _candidate(0.83, 0.761, 5),
        "ensemble: a logistic regression per backbone, C fixed, + perturbed copies": _candidate(0.835, 0.80, 7),
        "cell area alone (shortcut)": _candidate(0.95, 0.9, 0),
    }
    gates = {name: scores["gate"] for name, scores in candidates.items()}
    assert not gates["logistic regression on features, C chosen on inner folds"]["passed"]
    assert "below the reference" in gates["logistic regression on features, C chosen on inner folds"]["why"]
    assert gates["ensemble: a logistic regression per backbone, C fixed"]["passed"], "0.761 >= 0.78 - 0.02"
    copies = "ensemble: a logistic regression per backbone, C fixed, + perturbed copies"
    assert "calls 7 healthy" in gates[copies]["why"]
    choice = rule.choose(candidates, "release")
    assert "cell area alone (shortcut)" not in choice["passed"], "a shortcut is never a default"
    assert choice["chosen"] == "ensemble: a logistic regression per backbone, C fixed"
    candidates["ensemble: a logistic regression per backbone, C fixed"]["roc_auc"] = 0.809
    tied = rule.choose(candidates, "release")
    assert set(tied["tied"]) == {
        "ensemble: a logistic regression per backbone, C fixed",
        REFERENCE,
        "logistic regression on features, C = 0.1",
    }
    assert tied["chosen"] == REFERENCE, "within 0.01 the simplest wins"
    assert rule.choose(candidates, "recipe")["chosen"] is None, "no recipe was scored"
    assert kind_of("fine-tuned lite0 (2 stages, 3 epochs), as imaged, augmentation (recipe lite)") == "recipe"


def test_release_and_crossval_refuse_a_check_sharing_a_subject_before_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from pipeline.cli import main
    from pipeline.data.layouts import scan_dataset

    shared = make_check_folder(tmp_path / "shared", subjects=1, cells=1)
    one = scan_dataset(str(tiny_data)).training_records()[0]
    shutil.copy(one.path, shared / one.label.lower() / Path(one.path).name)
    out = tmp_path / "release"
    assert main(["release", "--data", str(tiny_data), "--out", str(out), "--check", str(shared)]) == 2
    assert not out.exists(), "refused before anything was built"
    runs = tmp_path / "runs"
    args = ["crossval", "--data", str(tiny_data), "--runs-dir", str(runs), "--final", "--check", str(shared)]
    assert main(args) == 2 and not runs.exists()
    assert capsys.readouterr().err.count(f"shares 1 subject(s) with the training data: {one.patient}") == 2


def test_the_run_table_carries_the_check_and_an_old_run_without_it_reads_as_before(tmp_path: Path) -> None:
    from pipeline.runs.catalog import model_card, run_row
    from tests.helpers import fake_run

    checked, old = fake_run(tmp_path, "checked"), fake_run(tmp_path, "old")
    section = check_section(_predictions(), None, "elsewhere")
    checked.write_metrics({**checked.metrics(), SECTION: section})
    row, plain = run_row(checked), run_row(old)
    assert row["state"] == plain["state"] == "completed"
    assert row["check_roc_auc"] == section["roc_auc"]["value"]
    assert row["check_healthy_called_all"] == f"{section['healthy_called_all']['cells']} of 9"
    assert plain["check_roc_auc"] is None and plain["check_healthy_called_all"] is None
    assert model_card(checked)["other_subjects"] == section and model_card(old)["other_subjects"] is None
