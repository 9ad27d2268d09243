"""A run's model on other labelled data: the images it trained, validated or chose on are left out and counted, the
rest scored with patient-bootstrap intervals."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ImageReadError, PipelineError
from ..data.cache import load_images
from ..data.decode import read_image
from ..data.layouts import PRELIM_SUBSET, UNKNOWN_PATIENT, cell_name, scan_dataset
from ..evaluation.evaluate import metrics_from_predictions
from ..evaluation.intervals import patient_bootstrap
from ..runs.folder import RunFolder
from .batches import predictions_table
from .predict import Predictor

SEEN_REASONS = ("same_path", "same_name", "same_pixels", "seen_patient")
"""Why an image counts as seen by a run, in the order they are tested: the same file, the same C-NMC cell name
(`UID_<patient>_<image>_<cell>`, whatever the extension or folder), the same decoded pixels (a re-encoded copy),
or another image of a patient the run trained or validated on."""


def pixel_digest(path: str) -> str:
    """A digest of an image's decoded pixels (shape included): the same cell saved as BMP, PNG or TIFF agrees."""
    image = read_image(path)
    return hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


def seen_reasons(table: pd.DataFrame, split: pd.DataFrame) -> np.ndarray:
    """For each image of `table` (path, patient), why the run of `split` has seen it (one of `SEEN_REASONS`), or
    "" when it has not. `PipelineError` in one line when the run's own images cannot be read (without their
    pixels it cannot tell)."""
    seen = split[split["subset"].isin(["train", "val"])]
    seen_paths = {str(Path(path).resolve()) for path in seen["path"]}
    seen_names = {name for name in map(cell_name, seen["path"]) if name}
    seen_patients = {str(patient) for patient in seen["patient"] if str(patient) != UNKNOWN_PATIENT}
    unreadable, seen_pixels = [], set()
    for path in seen["path"]:
        try:
            seen_pixels.add(pixel_digest(path))
        except ImageReadError:
            unreadable.append(path)
    if unreadable:
        raise PipelineError(
            f"{len(unreadable)} of the {len(seen)} images this run trained or validated on cannot be "
            f"read (first: {unreadable[0]}), so it cannot tell which images it saw; make them "
            "readable at the paths of its split.csv."
        )
    reasons = []
    for row in table.itertuples(index=False):
        reason = ""
        if str(Path(row.path).resolve()) in seen_paths:
            reason = "same_path"
        elif cell_name(row.path) in seen_names:
            reason = "same_name"
        else:
            try:
                reason = "same_pixels" if pixel_digest(row.path) in seen_pixels else ""
            except ImageReadError:
                reason = ""  # an unreadable image is skipped (and counted) later
            if not reason and str(getattr(row, "patient", UNKNOWN_PATIENT)) in seen_patients:
                reason = "seen_patient"
        reasons.append(reason)
    return np.array(reasons, dtype=object)


def seen_warning(dropped: dict[str, int], include_seen_patients: bool = False) -> str | None:
    """The sentence that says which images an evaluation left out as seen by the run, or None when none was."""
    reasons = [
        f"{count} by {reason.replace('_', ' ')}"
        for reason, count in dropped.items()
        if count and (reason != "seen_patient" or not include_seen_patients)
    ]
    return "Left out as seen by the run: " + ", ".join(reasons) + "." if reasons else None


def _images_to_evaluate(split: pd.DataFrame, data_dir: str | Path | None) -> tuple[pd.DataFrame, str, str]:
    """(path, patient, label of the images, which subset they are, the evaluation's name): the run's test subset
    again, or the labelled images of `data_dir` (its prelim test set when it has one)."""
    if data_dir is None:
        if not (split["subset"] == "test").any():
            raise PipelineError(
                "This run has no test subset (a final model trains on every patient; its figures are out of fold): "
                "evaluate it on other patients with --data."
            )
        return split[split["subset"] == "test"], "test", "test-subset"
    dataset = scan_dataset(data_dir)
    records = [r for r in dataset.labelled if r.subset == PRELIM_SUBSET] or dataset.labelled
    if not records:
        raise PipelineError(
            f"{data_dir} holds no labelled image to evaluate on (unlabelled test images, or a "
            f"prelim folder without its labels CSV)."
        )
    table = pd.DataFrame(
        {
            "path": [r.path for r in records],
            "patient": [r.patient for r in records],
            "label": [r.label for r in records],
        }
    )
    subset = PRELIM_SUBSET if records[0].subset == PRELIM_SUBSET else "all labelled"
    return table, subset, f"{Path(data_dir).name}-{subset}"


def _predicted(predictor: Predictor, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The predictions table of the rows' images that read, and how many did not."""
    if predictor.release is not None:  # each member prepares the image at its own size
        answers = predictor.predict_paths(rows["path"].tolist())
        read = answers["error"].isna().to_numpy()
        return predictions_table(rows[read].reset_index(drop=True), answers["prob_all"][read].to_numpy()), int(
            (~read).sum()
        )
    images, failed = load_images(rows["path"].tolist(), predictor.config.image_size, predictor.config.clahe)
    keep = ~rows["path"].isin(list(failed)).to_numpy()
    rows = rows[keep].reset_index(drop=True)
    prob_all = predictor.predict_inputs(np.asarray(images)[keep])
    return predictions_table(rows, prob_all), len(failed)


def evaluate_run(
    run_dir: str | Path, data_dir: str | Path | None = None, include_seen_patients: bool = False
) -> tuple[dict[str, Any], Path]:
    """Metrics of a run's model on its test subset again, or on the labelled images of `data_dir` (its prelim
    test set when it has one), never counting an image the run trained or validated on (by path, C-NMC cell name
    or decoded pixels). Other images of the run's training or validation patients are reported apart
    (`seen_patients`) and left out of the headline unless `include_seen_patients`. Written to
    `evaluations/<name>/` of the run; returns the metrics and that folder."""

    folder = RunFolder(Path(run_dir))
    predictor = Predictor.from_run(run_dir)
    split = folder.split() if folder.split_path.is_file() else pd.DataFrame(columns=["path", "subset"])
    table, subset, name = _images_to_evaluate(split, data_dir)
    if table.empty:
        raise PipelineError("No labelled images to evaluate on.")
    reasons = seen_reasons(table, split)
    dropped = {reason: int((reasons == reason).sum()) for reason in SEEN_REASONS}
    same_image = np.isin(reasons, ["same_path", "same_name", "same_pixels"])
    of_seen_patient = reasons == "seen_patient"
    headline = ~same_image & (~of_seen_patient | include_seen_patients)
    if not headline.any():
        detail = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items() if count)
        raise PipelineError(
            f"Every labelled image there was seen by this run ({detail}): nothing is left to evaluate "
            "on" + (" (--include-seen-patients counts other images of its patients)." if of_seen_patient.any() else ".")
        )

    predictions, failed = _predicted(predictor, table[headline].reset_index(drop=True))
    apart = of_seen_patient & ~headline
    seen_patients = None
    if apart.any():
        seen_predictions, _ = _predicted(predictor, table[apart].reset_index(drop=True))
        seen_patients = {
            **metrics_from_predictions(seen_predictions),
            "note": "images of patients the run trained or validated on: flattering, not the headline",
        }
    metrics = {
        **metrics_from_predictions(predictions),
        "subset": subset,
        "data_dir": str(data_dir or ""),
        "skipped_images": failed,
        "excluded_seen_images": dropped,
        "tta": predictor.config.tta,
        "temperature": predictor.temperature,
        "include_seen_patients": include_seen_patients,
        "seen_patients": seen_patients,
        "intervals": patient_bootstrap(predictions),
    }
    if warning := seen_warning(dropped, include_seen_patients):
        metrics["warnings"] = [*(metrics.get("warnings") or []), warning]
    out_dir = folder.evaluation_dir(name)
    target = RunFolder(out_dir)
    target.write_predictions(predictions)
    target.write_metrics(metrics)
    return metrics, out_dir
