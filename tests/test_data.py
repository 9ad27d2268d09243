from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.layouts import parse_cnmc_name, scan_dataset


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


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("UID_H10_1_1_hem.bmp", ("UID_H10", "HEM")),
        ("UID_h22_3_2_hem.bmp", ("UID_H22", "HEM")),
        ("UID_13_1_1_all.bmp", ("UID_13", "ALL")),
        ("UID_H10_12_3_hem.png", ("UID_H10", "HEM")),
        ("UID_h10_12_3_HEM.PNG", ("UID_H10", "HEM")),
        ("UID_7_2_1_all.jpg", ("UID_7", "ALL")),
        ("UID_7_2_1_all.jpeg", ("UID_7", "ALL")),
        ("UID_7_2_1_all.tif", ("UID_7", "ALL")),
        ("UID_7_2_1_all.TIFF", ("UID_7", "ALL")),
        ("cell_01.png", None),
        ("UID_7_2_1_all.gif", None),
        ("UID_X7_2_1_all.png", None),
    ],
)
def test_parse_cnmc_names_with_any_image_suffix(name: str, parsed) -> None:
    assert parse_cnmc_name(name) == parsed


def test_patients_are_read_from_png_names_in_both_layouts(tmp_path: Path) -> None:
    cell = np.full((20, 20, 3), 90, np.uint8)
    _write(tmp_path / "cnmc" / "training_data" / "fold_1" / "hem" / "UID_H10_12_3_hem.png", cell)
    _write(tmp_path / "cnmc" / "training_data" / "fold_1" / "all" / "UID_5_1_1_all.tif", cell)
    _write(tmp_path / "generic" / "hem" / "UID_h14_2_1_hem.jpg", cell)
    _write(tmp_path / "generic" / "all" / "UID_5_1_1_all.PNG", cell)
    assert {r.patient for r in scan_dataset(tmp_path / "cnmc").records} == {"UID_H10", "UID_5"}
    assert {r.patient for r in scan_dataset(tmp_path / "generic").records} == {"UID_H14", "UID_5"}


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
        ("a.png", "ALL"),
        ("b.jpg", "ALL"),
        ("c.tif", "HEM"),
        ("d.bmp", "HEM"),
    ]
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
    with pytest.raises(PipelineError, match="does not exist|No usable images"):
        scan_dataset(root)
