"""The cells of an other-subject check (`--check DIR`): labelled cells of subjects a model never trained on. Refused,
naming them, when a subject is also in the training data, and when the folder cannot support a check (no labelled
cell, one class, cells without a subject)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..core.errors import PipelineError
from .layouts import UNKNOWN_PATIENT, scan_dataset


def check_cells(check_dir: str | Path, training_patients: Iterable[str]) -> pd.DataFrame:
    """path (absolute), patient, label of every labelled cell of `check_dir`, sorted by path; `PipelineError` when
    one of its subjects is in `training_patients`, or when it holds no cells of both classes with C-NMC subject
    names."""
    records = scan_dataset(check_dir).labelled
    if not records:
        raise PipelineError(f"The check folder {check_dir} holds no labelled cell.")
    unnamed = [record.path for record in records if record.patient == UNKNOWN_PATIENT]
    if unnamed:
        raise PipelineError(
            f"{len(unnamed)} cell(s) of the check folder {check_dir} name no subject (first: {Path(unnamed[0]).name}): "
            "a check resamples subjects, so its files need C-NMC names (UID_<subject>_<image>_<cell>_<all|hem>)."
        )
    table = pd.DataFrame(
        {
            "path": [str(Path(record.path).resolve()) for record in records],
            "patient": [str(record.patient) for record in records],
            "label": [record.label for record in records],
        }
    ).sort_values("path", ignore_index=True)
    if table["label"].nunique() < 2:
        raise PipelineError(f"The check folder {check_dir} holds {table['label'].iloc[0]} cells only; it needs both.")
    shared = sorted(set(table["patient"]) & {str(patient) for patient in training_patients})
    if shared:
        raise PipelineError(
            f"The check folder {check_dir} shares {len(shared)} subject(s) with the training data: "
            f"{', '.join(shared)}. A check must hold subjects the model never trained on."
        )
    return table
