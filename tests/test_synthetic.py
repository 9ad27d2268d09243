import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.layouts import scan_dataset
from pipeline.data.synthetic import generate


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", per_class=6, patients=3, seed=5)
    second = generate(tmp_path / "b", per_class=6, patients=3, seed=5)
    third = generate(tmp_path / "c", per_class=6, patients=3, seed=6)
    assert _digests(first) == _digests(second)
    assert _digests(first) != _digests(third)


def test_official_layout_naming_and_distinct_patients(tiny_data: Path) -> None:
    dataset = scan_dataset(tiny_data)
    assert dataset.layout == "cnmc" and dataset.synthetic and not dataset.skipped
    frame = dataset.frame()
    training = frame[frame["subset"].str.startswith("fold_")]
    assert training["label"].value_counts().to_dict() == {"ALL": 16, "HEM": 16}
    all_patients = set(training.loc[training["label"] == "ALL", "patient"])
    hem_patients = set(training.loc[training["label"] == "HEM", "patient"])
    assert len(all_patients) == 4 and len(hem_patients) == 4 and not all_patients & hem_patients
    assert all(p.startswith("UID_H") for p in hem_patients)
    prelim = frame[frame["subset"] == "prelim_test"]
    assert set(prelim["label"]) == {"ALL", "HEM"}
    assert not set(prelim["patient"]) & (all_patients | hem_patients)
    image = cv2.imread(training["path"].iloc[0], cv2.IMREAD_UNCHANGED)
    assert image.shape == (450, 450, 3) and image.dtype == np.uint8
    assert (image[:5, :5] == 0).all(), "background is black"


def test_all_blasts_are_larger_than_hem_cells_on_average(tiny_data: Path) -> None:
    frame = scan_dataset(tiny_data).frame()
    area = {
        label: np.mean([(cv2.imread(p).sum(axis=2) > 0).mean() for p in group["path"]])
        for label, group in frame.groupby("label")
    }
    assert area["ALL"] > 1.1 * area["HEM"]


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="not empty"):
        generate(tmp_path, per_class=2, patients=1)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
