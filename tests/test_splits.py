"""Splits against their invariants: whole patients per subset, both classes where patients allow, folds that
partition the patients, and a report that names every weakness."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.layouts import Record, scan_dataset
from pipeline.data.splits import split_records, split_report

FOLD1 = Path(__file__).resolve().parents[2] / "shared" / "cnmc-fold1"
# Patients of real C-NMC fold 1 and their image counts (../shared/cnmc-fold1/README.md).
FOLD1_PATIENTS = {
    "UID_2": 84,
    "UID_16": 53,
    "UID_23": 97,
    "UID_30": 201,
    "UID_32": 212,
    "UID_33": 181,
    "UID_34": 352,
    "UID_38": 145,
    "UID_44": 146,
    "UID_46": 190,
    "UID_51": 757,
    "UID_H10": 405,
    "UID_H14": 385,
    "UID_H22": 373,
}


def _records(n_all: int, n_hem: int, patients: int = 0) -> list[Record]:
    records = []
    for index in range(n_all + n_hem):
        label = "ALL" if index < n_all else "HEM"
        patient = f"UID_{'' if label == 'ALL' else 'H'}{index % patients}" if patients else "unknown"
        records.append(Record(f"/x/{index}.bmp", label, patient, f"fold_{index % 3}"))
    return records


def test_image_split_of_fold_0_gives_the_papers_counts() -> None:
    records = _records(2397, 1130)
    split = split_records(records, "image", seed=42)
    assert split["subset"].value_counts().to_dict() == {"train": 2257, "val": 564, "test": 706}
    for subset in ("train", "val", "test"):
        share = (split.loc[split["subset"] == subset, "label"] == "ALL").mean()
        assert abs(share - 2397 / 3527) < 0.01
    assert split["path"].is_unique and len(split) == 3527
    assert split.equals(split_records(records, "image", seed=42))
    assert not split.equals(split_records(records, "image", seed=1))


def test_patient_split_never_puts_a_patient_in_two_subsets() -> None:
    records = _records(300, 200, patients=20)
    split = split_records(records, "patient", seed=3)
    subsets_per_patient = split.groupby("patient")["subset"].nunique()
    assert (subsets_per_patient == 1).all()
    assert set(split["subset"]) == {"train", "val", "test"}
    for subset in ("train", "val", "test"):
        assert split.loc[split["subset"] == subset, "label"].nunique() == 2
    assert 0.1 < (split["subset"] == "test").mean() < 0.3
    assert split.equals(split_records(records, "patient", seed=3))


def test_folds_split_validates_on_one_fold_and_tests_on_prelim() -> None:
    records = _records(60, 60, patients=12)
    prelim = [Record(f"/p/{i}.bmp", "ALL" if i % 2 else "HEM", "unknown", "prelim_test") for i in range(10)]
    split = split_records(records, "folds", val_fold=2, test_records=prelim)
    val_paths = set(split.loc[split["subset"] == "val", "path"])
    assert val_paths == {r.path for r in records if r.subset == "fold_2"}
    assert set(split.loc[split["subset"] == "test", "path"]) == {r.path for r in prelim}
    assert set(split.loc[split["subset"] == "train", "path"]) == {r.path for r in records if r.subset != "fold_2"}


def test_one_class_only_is_refused() -> None:
    with pytest.raises(PipelineError, match="Only one class"):
        split_records(_records(10, 0), "image")


def test_folds_split_without_a_prelim_set_tests_on_half_the_held_out_patients() -> None:
    records = _records(60, 60, patients=12)
    split = split_records(records, "folds", val_fold=2, seed=0)
    held_out = split[split["path"].isin({r.path for r in records if r.subset == "fold_2"})]
    assert set(held_out["subset"]) == {"val", "test"}
    assert (held_out.groupby("patient")["subset"].nunique() == 1).all(), "whole patients per subset"
    assert set(split.loc[split["subset"] == "train", "path"]) == {r.path for r in records if r.subset != "fold_2"}


def _fold1_like() -> list[Record]:
    return [
        Record(f"/x/{patient}_{index}.png", "HEM" if patient.startswith("UID_H") else "ALL", patient, "fold_1")
        for patient, count in FOLD1_PATIENTS.items()
        for index in range(count)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_patient_split_of_fold_1_gives_every_subset_both_classes(seed: int) -> None:
    split = split_records(_fold1_like(), "patient", seed=seed)
    report = split_report(split)
    assert (split.groupby("patient")["subset"].nunique() == 1).all()
    for subset in ("train", "val", "test"):
        assert report["subsets"][subset]["patients"]["HEM"] == 1, "3 healthy subjects: one per subset"
        assert report["subsets"][subset]["patients"]["ALL"] >= 1
    assert report["subsets"]["test"]["patients"]["ALL"] == 2 and report["subsets"]["val"]["patients"]["ALL"] == 2
    assert report["leakage"] == {"train_test_patients": 0, "train_val_patients": 0, "val_test_patients": 0}
    assert any("1 HEM patient" in warning for warning in report["warnings"]), "few patients are named"


def test_seeds_change_the_test_patients() -> None:
    tests = {
        frozenset(split_records(_fold1_like(), "patient", seed=seed).query("subset == 'test'")["patient"])
        for seed in range(10)
    }
    assert len(tests) >= 6


def test_patient_cross_validation_partitions_the_patients_and_each_fold_holds_both_classes() -> None:
    records = _fold1_like()
    tested = []
    for fold in range(3):
        split = split_records(records, "patient", seed=1, cv_folds=3, cv_fold=fold)
        assert (split.groupby("patient")["subset"].nunique() == 1).all()
        test = split[split["subset"] == "test"]
        assert set(test["label"]) == {"ALL", "HEM"} and set(split.loc[split["subset"] == "val", "label"]) == {
            "ALL",
            "HEM",
        }
        tested.append(set(test["patient"]))
    assert set().union(*tested) == set(FOLD1_PATIENTS) and sum(len(t) for t in tested) == len(FOLD1_PATIENTS)
    with pytest.raises(PipelineError, match="HEM has 3"):
        split_records(records, "patient", cv_folds=4, cv_fold=0)


@pytest.mark.parametrize("seed", range(4))
def test_validation_from_all_patients_trains_on_every_healthy_subject_outside_test(seed: int) -> None:
    records = _fold1_like()
    for fold in range(3):
        split = split_records(records, "patient", seed=seed, cv_folds=3, cv_fold=fold, validation_from="ALL")
        by_subset = {name: set(rows["patient"]) for name, rows in split.groupby("subset")}
        healthy = {patient for patient in FOLD1_PATIENTS if patient.startswith("UID_H")}
        assert by_subset["train"] & healthy == healthy - by_subset["test"], "both other healthy subjects train"
        assert set(split.loc[split["subset"] == "val", "label"]) == {"ALL"} and len(by_subset["val"]) >= 1
        assert not (by_subset["train"] & by_subset["val"]) and not (by_subset["train"] & by_subset["test"])
    both = split_records(records, "patient", seed=seed, cv_folds=3, cv_fold=0)
    assert len(set(both.loc[both["subset"] == "train", "patient"]) & healthy) == 1, "the default keeps one"


def test_two_patients_of_a_class_leave_validation_without_it_and_say_so() -> None:
    records = [Record(f"/a/{i}.png", "ALL", f"UID_{i % 5}", "") for i in range(50)]
    records += [Record(f"/h/{i}.png", "HEM", f"UID_H{i % 2}", "") for i in range(20)]
    report = split_report(split_records(records, "patient", seed=0))
    assert report["subsets"]["test"]["patients"] == {"ALL": 1, "HEM": 1}
    assert report["subsets"]["val"]["per_class"]["HEM"] == 0
    assert any("val subset has no" in warning for warning in report["warnings"])


def test_unknown_patients_refuse_a_patient_split_or_are_named_in_the_report() -> None:
    with pytest.raises(PipelineError, match="needs patient ids"):
        split_records(_records(30, 30), "patient")
    mixed = _records(60, 60, patients=6) + [Record(f"/u/{i}.png", "ALL", "unknown", "") for i in range(5)]
    report = split_report(split_records(mixed, "patient", seed=0))
    assert report["unknown_patient_images"] == 5
    assert any("5 image(s) have no patient id" in warning for warning in report["warnings"])


def test_the_image_split_leaks_patients_and_the_report_counts_them() -> None:
    report = split_report(split_records(_records(300, 200, patients=10), "image", seed=0))
    assert report["leakage"]["train_test_patients"] == 20
    assert any("both the training and the test" in warning for warning in report["warnings"])


def test_real_fold_1_names_give_its_14_patients(tmp_path: Path) -> None:
    if not FOLD1.is_dir():
        pytest.skip("../shared/cnmc-fold1 is not here")
    dataset = scan_dataset(FOLD1)
    frame = dataset.frame()
    assert frame.groupby("patient").size().to_dict() == FOLD1_PATIENTS
    split = split_records(dataset.training_records(), "patient", seed=42)
    assert np.all(split.groupby("subset")["label"].nunique() == 2)


def test_a_split_without_validation_or_test_images_says_so() -> None:
    records = [Record(f"/a/{i}.png", label, f"UID_{label}{i % 2}", "") for label in ("ALL", "HEM") for i in range(8)]
    report = split_report(split_records(records, "patient", seed=0))
    assert "val" not in report["subsets"]
    assert any("no validation subset" in warning for warning in report["warnings"])


def test_the_image_split_keeps_near_identical_cells_of_a_patient_in_one_subset(tmp_path) -> None:
    """Real cells of the embedded sample, plus copies of four of them: one byte-identical under another name,
    the others the same cell moved within the frame (a second microscope field)."""
    import shutil

    import cv2

    from pipeline.core.config import EMBEDDED_SAMPLE
    from pipeline.data.decode import read_image
    from pipeline.data.duplicates import near_duplicate_groups
    from pipeline.data.layouts import scan_dataset
    from pipeline.data.splits import split_report

    root = tmp_path / "cells"
    shutil.copytree(EMBEDDED_SAMPLE / "training_data", root / "training_data")
    originals = sorted((root / "training_data" / "fold_1" / "all").glob("UID_16_*"))[:4]
    copies = []
    for number, original in enumerate(originals):
        copy = original.with_name(f"UID_16_{900 + number}_1_all.png")
        if number == 0:
            shutil.copy(original, copy)
        else:
            image = read_image(original)
            moved = cv2.warpAffine(image, np.float32([[1, 0, 7 * number], [0, 1, -5 * number]]), image.shape[1::-1])
            cv2.imwrite(str(copy), cv2.cvtColor(moved, cv2.COLOR_RGB2BGR))
        copies.append((str(original), str(copy)))
    records = scan_dataset(root).labelled
    groups = dict(zip([r.path for r in records], near_duplicate_groups(records), strict=True))
    assert all(groups[original] == groups[copy] for original, copy in copies)
    assert max(np.bincount(list(groups.values()))) <= 3, "different cells are not merged"
    for seed in range(5):
        split = split_records(records, "image", seed=seed)
        subset = dict(zip(split["path"], split["subset"], strict=True))
        assert all(subset[original] == subset[copy] for original, copy in copies), seed
        report = split_report(split)
        assert report["near_duplicates"]["groups"] >= len(copies)
        assert report["near_duplicates"]["images"] >= 2 * len(copies)
