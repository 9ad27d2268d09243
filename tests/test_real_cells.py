"""Behaviour that depends on real cells, on the C-NMC sample that ships with the project (always present)."""

import numpy as np
import pytest

from pipeline.core.config import EMBEDDED_SAMPLE, ClaheSettings
from pipeline.data.decode import read_image
from pipeline.data.layouts import scan_dataset
from pipeline.data.preprocess import local_contrast, preprocess

FOLD1_ALL = [
    "UID_16",
    "UID_2",
    "UID_23",
    "UID_30",
    "UID_32",
    "UID_33",
    "UID_34",
    "UID_38",
    "UID_44",
    "UID_46",
    "UID_51",
]


def _cell_mask(image: np.ndarray) -> np.ndarray:
    """The segmented cell: C-NMC cells sit on pure black."""
    return image.max(axis=2) > 10


def test_the_embedded_sample_has_every_patient_of_fold_1_with_its_png_names() -> None:
    dataset = scan_dataset(EMBEDDED_SAMPLE)
    assert dataset.layout == "cnmc" and not dataset.synthetic and not dataset.skipped
    frame = dataset.frame()
    assert len(frame) == 441 and frame["path"].str.endswith(".png").all()
    per_patient = frame.groupby(["patient", "label"]).size()
    assert {p for p, label in per_patient.index if label == "ALL"} == set(FOLD1_ALL)
    assert {p for p, label in per_patient.index if label == "HEM"} == {"UID_H10", "UID_H14", "UID_H22"}
    assert set(per_patient.loc[:, "ALL"]) == {21} and set(per_patient.loc[:, "HEM"]) == {70}
    readme = (EMBEDDED_SAMPLE / "README.md").read_text()
    assert "| UID_H14 | HEM | 70 |" in readme and "CC BY 3.0" in (EMBEDDED_SAMPLE / "ATTRIBUTION.md").read_text()


def test_clahe_on_real_stain_raises_contrast_inside_the_cell_and_keeps_the_background_black() -> None:
    records = scan_dataset(EMBEDDED_SAMPLE).labelled[::40]
    for record in records:
        image = read_image(record.path)
        assert image.shape == (450, 450, 3) and image.dtype == np.uint8
        resized = preprocess(image, 224, ClaheSettings(enabled=False))
        enhanced = preprocess(image, 224, ClaheSettings())
        cell = _cell_mask(resized)
        assert 0.05 < cell.mean() < 0.6, "one segmented cell on black"
        assert local_contrast(enhanced) > 1.2 * local_contrast(resized), record.path
        assert enhanced[~cell].mean() < 25, "the background stays (nearly) black"


def test_real_names_give_patient_ids_for_a_patient_split() -> None:
    from pipeline.data.splits import split_records, split_report

    split = split_records(scan_dataset(EMBEDDED_SAMPLE).training_records(), "patient", seed=0)
    report = split_report(split)
    assert report["unknown_patient_images"] == 0 and report["leakage"]["train_test_patients"] == 0
    assert all(report["subsets"][name]["patients"]["HEM"] == 1 for name in ("train", "val", "test"))


def _stain_detector(size: int):
    """A model that answers ALL the more a cell is stained (purple: red and blue above green), computed at every
    pixel by a 1x1 convolution: what it looks at is known to be the cell."""
    import keras

    inputs = keras.Input((size, size, 3))
    stained = keras.layers.Conv2D(1, 1, activation="relu", name="top_activation")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(stained)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("top_activation").set_weights([np.array([0.5, -1.0, 0.5]).reshape(1, 1, 3, 1), np.zeros(1)])
    model.get_layer("predictions").set_weights([np.array([[-0.2, 0.2]]), np.zeros(2)])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "layercam"])
def test_explanations_of_real_cells_lie_on_the_cell(method: str) -> None:
    from pipeline.explain.cams import Explainer

    explainer = Explainer(_stain_detector(128))
    shares = []
    for record in scan_dataset(EMBEDDED_SAMPLE).labelled[::60]:
        image = read_image(record.path)
        heatmap = explainer.heatmap(preprocess(image, 128, ClaheSettings()), method, class_index=1)
        cell = _cell_mask(preprocess(image, 128, ClaheSettings(enabled=False)))
        shares.append((heatmap[cell].sum() / max(heatmap.sum(), 1e-9), cell.mean()))
    share, area = np.mean(shares, axis=0)
    assert share > 0.9 and area < 0.4, f"{method}: {share:.2f} of the map on a cell covering {area:.2f} of the image"
