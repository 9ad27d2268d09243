"""What a run has seen, on real cells of the embedded C-NMC sample: the same file, the same cell under another name
or format, the same pixels, or another image of one of its patients."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import EMBEDDED_SAMPLE
from pipeline.core.errors import PipelineError
from pipeline.data.decode import read_image
from pipeline.data.layouts import cell_name, scan_dataset
from pipeline.inference.evaluate_other import seen_reasons
from pipeline.runs.display import example_cells


@pytest.fixture(scope="module")
def cells() -> dict[str, list]:
    by_patient: dict[str, list] = {}
    for record in scan_dataset(EMBEDDED_SAMPLE).labelled:
        by_patient.setdefault(record.patient, []).append(record)
    return by_patient


def _split(rows: list[tuple[object, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"path": r.path, "patient": r.patient, "label": r.label, "subset": s} for r, s in rows])


def test_a_cell_is_seen_by_path_name_pixels_or_patient_and_a_new_patient_is_not(cells, tmp_path: Path) -> None:
    trained, validated, other = cells["UID_16"][:3], cells["UID_H14"][:2], cells["UID_34"][0]
    split = _split([(r, "train") for r in trained] + [(r, "val") for r in validated])
    as_bmp = tmp_path / "elsewhere" / (Path(trained[0].path).stem + ".bmp")  # same cell name, other folder/format
    as_bmp.parent.mkdir()
    cv2.imwrite(str(as_bmp), cv2.cvtColor(read_image(trained[0].path), cv2.COLOR_RGB2BGR))
    renamed = tmp_path / "cell-42.tif"  # same pixels, a name that says nothing
    cv2.imwrite(str(renamed), cv2.cvtColor(read_image(validated[1].path), cv2.COLOR_RGB2BGR))
    table = pd.DataFrame(
        {
            "path": [trained[1].path, str(as_bmp), str(renamed), cells["UID_16"][5].path, other.path],
            "patient": ["UID_16", "UID_16", "unknown", "UID_16", "UID_34"],
        }
    )
    assert cell_name(as_bmp) == cell_name(trained[0].path) and cell_name(renamed) is None
    assert seen_reasons(table, split).tolist() == ["same_path", "same_name", "same_pixels", "seen_patient", ""]


def test_when_the_runs_own_images_cannot_be_read_it_says_so_and_stops(cells, tmp_path: Path) -> None:
    split = _split([(cells["UID_16"][0], "train")])
    split.loc[0, "path"] = str(tmp_path / "gone" / "UID_16_1_1_all.bmp")
    table = pd.DataFrame({"path": [cells["UID_34"][0].path], "patient": ["UID_34"]})
    with pytest.raises(PipelineError, match="1 of the 1 images this run trained or validated on cannot be read"):
        seen_reasons(table, split)


def test_predict_marks_a_training_patients_other_cells_and_its_cells_under_another_name(cells, tmp_path: Path) -> None:
    """A model trained on the whole fold (paths of ../shared) has seen the embedded sample's cells (PNG copies)."""
    fold = tmp_path / "fold"
    rows = []
    for patient in ("UID_16", "UID_H14"):
        for record in cells[patient][:2]:
            copy = fold / (Path(record.path).stem + ".bmp")
            copy.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(copy), np.zeros((8, 8, 3), np.uint8))
            rows.append({"path": str(copy), "patient": patient, "label": record.label, "subset": "train"})
    examples = example_cells([r for records in cells.values() for r in records], pd.DataFrame(rows), per_class=8)
    roles = {example["path"]: example["role"] for example in examples}
    trained_names = {cell_name(row["path"]) for row in rows}
    for path, role in roles.items():
        if cell_name(path) in trained_names:
            assert role == "trained on", path
        elif Path(path).name.startswith(("UID_16_", "UID_H14_")):
            assert role == "its patient trained on", path
        else:
            assert role == "not in its data", path
    assert "its patient trained on" in roles.values() or "trained on" in roles.values()
