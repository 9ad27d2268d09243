from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import Record, parse_cnmc_name, scan_dataset, split_records
from pipeline.errors import PipelineError


def test_real_sample_loads_with_labels_patients_and_prelim_label(cnmc_sample: Path) -> None:
    dataset = scan_dataset(cnmc_sample)
    assert dataset.layout == "cnmc" and not dataset.synthetic and not dataset.skipped
    frame = dataset.frame()
    fold = frame[frame["subset"] == "fold_0"]
    assert (fold["label"] == "ALL").sum() == 6 and (fold["label"] == "HEM").sum() == 6
    assert set(fold.loc[fold["label"] == "ALL", "patient"]) == {"UID_1", "UID_2", "UID_13"}
    assert set(fold.loc[fold["label"] == "HEM", "patient"]) == {"UID_H1", "UID_H6", "UID_H10"}
    assert all(Path(p).parent.name == label.lower() for p, label in zip(fold["path"], fold["label"], strict=True))
    prelim = frame[frame["subset"] == "prelim_test"]
    assert prelim[["label", "patient"]].values.tolist() == [["ALL", "UID_57"]]
    assert Path(prelim["path"].iloc[0]).name == "1.bmp"


def test_parse_cnmc_names() -> None:
    assert parse_cnmc_name("UID_H10_1_1_hem.bmp") == ("UID_H10", "HEM")
    assert parse_cnmc_name("UID_h22_3_2_hem.bmp") == ("UID_H22", "HEM")
    assert parse_cnmc_name("UID_13_1_1_all.bmp") == ("UID_13", "ALL")
    assert parse_cnmc_name("cell_01.png") is None


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_generic_layout_any_case_any_format_and_unreadable_files_counted(tmp_path: Path) -> None:
    cell = np.full((20, 20, 3), 90, np.uint8)
    _write(tmp_path / "ALL" / "a.png", cell)
    _write(tmp_path / "ALL" / "b.jpg", cell)
    _write(tmp_path / "Hem" / "c.tif", cell)
    _write(tmp_path / "Hem" / "d.bmp", cell)
    (tmp_path / "Hem" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "Hem" / "empty.bmp").write_bytes(b"")
    (tmp_path / "Hem" / "notes.txt").write_text("ignored")
    dataset = scan_dataset(tmp_path)
    assert dataset.layout == "generic"
    assert sorted((Path(r.path).name, r.label) for r in dataset.records) == [
        ("a.png", "ALL"), ("b.jpg", "ALL"), ("c.tif", "HEM"), ("d.bmp", "HEM")]
    assert {r.patient for r in dataset.records} == {"unknown"}
    assert sorted(Path(path).name for path, _ in dataset.skipped) == ["broken.png", "empty.bmp"]
    assert dataset.info()["skipped"] == 2


@pytest.mark.parametrize("make", ["missing", "empty", "wrong"])
def test_bad_dataset_roots_give_a_clear_error(tmp_path: Path, make: str) -> None:
    root = tmp_path / "root"
    if make != "missing":
        root.mkdir()
    if make == "wrong":
        (root / "cats").mkdir()
        _write(root / "cats" / "x.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(PipelineError, match="does not exist|No images found"):
        scan_dataset(root)


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
