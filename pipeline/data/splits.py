"""Reproducible splits into train, validation and test, and what a split can and cannot support.

`patient`: whole patients per subset, chosen class by class, so that every subset holds both classes whenever
each class has at least 3 patients. `patient` with `cv_folds=K`: fold `cv_fold` of a patient-level K-fold
cross-validation (the K test subsets partition the patients). `image`: the paper's stratified random split.
`folds`: the official C-NMC folds. `none`: every image trains (a final model, scored out of fold elsewhere).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .. import DISPLAY_ORDER
from ..core.errors import PipelineError
from .duplicates import near_duplicate_groups
from .layouts import UNKNOWN_PATIENT, Record

SUBSETS = ("train", "val", "test")
MIN_PATIENTS_PER_CLASS = 3
"""Fewer patients of a class in a subset and its figures speak for those patients, not for the class."""


def _groups(records: list[Record]) -> np.ndarray:
    """Patient ids as groups; an image of unknown patient is a group of its own."""
    return np.array([r.patient if r.patient != UNKNOWN_PATIENT else f"image:{r.path}" for r in records])


def _patients_by_class(labels: np.ndarray, groups: np.ndarray) -> dict[str, list[str]]:
    """Each group under its majority label, sorted (so a seed alone decides the order after shuffling)."""
    frame = pd.DataFrame({"group": groups, "label": labels})
    majority = frame.groupby("group")["label"].agg(lambda values: values.mode().iloc[0])
    return {label: sorted(majority.index[majority == label]) for label in DISPLAY_ORDER}


def _holdout_counts(patients: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """(test, validation) patients of one class: at least one each while one is left to train on."""
    if patients >= 3:
        test = min(max(1, round(test_fraction * patients)), patients - 2)
        val = min(max(1, round(val_fraction * (patients - test))), patients - test - 1)
        return test, val
    return (1, 0) if patients == 2 else (0, 0)


def _patient_split(
    labels: np.ndarray,
    groups: np.ndarray,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    cv_folds: int = 0,
    cv_fold: int = 0,
    validation_from: str = "both",
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    by_class = _patients_by_class(labels, groups)
    if cv_folds:
        short = {label: len(patients) for label, patients in by_class.items() if len(patients) < cv_folds}
        if short:
            raise PipelineError(
                f"{cv_folds}-fold patient cross-validation needs at least {cv_folds} patients per class so that every "
                f"test fold holds both classes; "
                + ", ".join(f"{label} has {n}" for label, n in short.items())
                + ". Use fewer folds."
            )
        if not 0 <= cv_fold < cv_folds:
            raise PipelineError(f"Fold {cv_fold} does not exist in a {cv_folds}-fold cross-validation.")
    subset_of: dict[str, str] = {}
    for label, patients in by_class.items():
        order = list(rng.permutation(patients))
        if cv_folds:
            folds = np.array_split(np.array(order, dtype=object), cv_folds)
            test = list(folds[cv_fold])
            rest = [patient for fold in folds[cv_fold + 1 :] + folds[:cv_fold] for patient in fold]
            n_val = min(max(1, round(val_fraction * len(rest))), len(rest) - 1) if len(rest) >= 2 else 0
        else:
            n_test, n_val = _holdout_counts(len(order), test_fraction, val_fraction)
            test, rest = order[:n_test], order[n_test:]
        if validation_from != "both" and label != validation_from:
            n_val = 0
        subset_of.update({patient: "test" for patient in test})
        subset_of.update({patient: "val" for patient in rest[:n_val]})
        subset_of.update({patient: "train" for patient in rest[n_val:]})
    return np.array([subset_of[group] for group in groups], dtype=object)


def cross_validation_folds(labels: np.ndarray, patients: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The rows of each test fold of a `folds`-fold patient cross-validation drawn with `seed` (`crossval --folds K
    --seed S`: the same patients in the same order), so that other models can be scored on the very folds of a
    cross-validation's runs."""
    groups = np.asarray(patients).astype(str)
    return [
        np.flatnonzero(_patient_split(np.asarray(labels), groups, 0.2, 0.2, seed, folds, fold) == "test")
        for fold in range(folds)
    ]


def split_records(
    records: list[Record],
    method: str = "patient",
    seed: int = 42,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    val_fold: int = 2,
    test_records: list[Record] | None = None,
    cv_folds: int = 0,
    cv_fold: int = 0,
    validation_from: str = "both",
) -> pd.DataFrame:
    """A table of path, patient, label, subset (train, val, test) for labelled `records`.

    image: stratified random; test = ceil(test_fraction * n), then validation = int(val_fraction * rest),
    as Keras' `validation_split` counts (fold_0's 3,527 images give 2,257 / 564 / 706).
    patient: per class, round(test_fraction * patients) patients to test and round(val_fraction * rest) to
    validation, at least one each when the class has 3 patients or more; with `cv_folds`, the patients of
    each class are dealt into `cv_folds` folds and fold `cv_fold` is the test subset; `validation_from="ALL"`
    draws validation from ALL patients only, so every healthy subject outside the test subset trains.
    none: every image trains (no validation, no test).
    folds: train on the C-NMC folds but `val_fold`, validate on it, test on `test_records` (the prelim set)
    or, without them, on half of the held-out fold's patients.
    """
    records = [record for record in records if record.label is not None]
    if not records:
        raise PipelineError("No labelled images to split.")
    counts = Counter(record.label for record in records)
    if len(counts) < 2:
        raise PipelineError(f"Only one class ({next(iter(counts))}) has images; both ALL and HEM are needed.")
    labels = np.array([record.label for record in records])
    subset = np.full(len(records), "train", dtype=object)
    groups = None
    if method == "image":  # by group of near-identical images, so no cell sits on both sides of a subset line
        groups = near_duplicate_groups(records)
        subset = _image_subsets(labels, groups, test_fraction, val_fraction, seed)
    elif method == "patient":
        if all(record.patient == UNKNOWN_PATIENT for record in records):
            raise PipelineError(
                "A patient split needs patient ids, and no file name here is a C-NMC name "
                "(UID_<patient>_<image>_<cell>_<all|hem>.<ext>); use the image split, knowing that "
                "images of one patient may then fall in two subsets."
            )
        subset = _patient_split(
            labels, _groups(records), test_fraction, val_fraction, seed, cv_folds, cv_fold, validation_from
        )
    elif method == "none":
        pass  # every image trains: the run's figures come from a cross-validation's out-of-fold predictions
    elif method == "folds":
        subset = _fold_subsets(records, labels, val_fold, bool(test_records), seed)
    else:
        raise PipelineError(f"Unknown split {method!r}.")
    frame = _records_table(records, subset)
    if groups is not None:
        frame["duplicate_group"] = groups
    if method == "folds" and test_records:
        labelled_test = [r for r in test_records if r.label is not None]
        frame = pd.concat([frame, _records_table(labelled_test, "test")], ignore_index=True)
    return frame


def _records_table(records: list[Record], subset: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [r.path for r in records],
            "patient": [r.patient for r in records],
            "label": [r.label for r in records],
            "subset": subset,
        }
    )


def _image_subsets(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> np.ndarray:
    """The image split's subsets, drawn by group of near-identical images and stratified by class."""
    subset = np.full(len(labels), "train", dtype=object)
    first = np.unique(groups, return_index=True)[1]
    group_labels = labels[first]
    index = np.arange(len(first))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=group_labels, random_state=seed)
    n_val = int(val_fraction * len(rest))
    _, val = train_test_split(rest, test_size=n_val, stratify=group_labels[rest], random_state=seed)
    subset[np.isin(groups, test)] = "test"
    subset[np.isin(groups, val)] = "val"
    return subset


def _fold_subsets(records: list[Record], labels: np.ndarray, val_fold: int, has_test: bool, seed: int) -> np.ndarray:
    """The folds split's subsets: the held-out C-NMC fold validates; without a test set of its own, half of its
    patients test instead."""
    subset = np.full(len(records), "train", dtype=object)
    held_out = f"fold_{val_fold}"
    folds = {record.subset for record in records}
    if held_out not in folds or len(folds) < 2:
        raise PipelineError(
            f"The folds split needs the C-NMC folds (found {sorted(folds)}; validation fold {held_out})."
        )
    in_held_out = np.array([record.subset == held_out for record in records])
    subset[in_held_out] = "val"
    if not has_test:
        positions = np.flatnonzero(in_held_out)
        halves = _patient_split(labels[positions], _groups(records)[positions], 0.5, 0.0, seed)
        subset[positions[halves == "test"]] = "test"
    return subset


def missing_subset_warning(what: str) -> str:
    """The warning of a split without a `what` ("validation", "test") subset."""
    return f"There is no {what} subset: too few patients to hold any out."


def split_report(split: pd.DataFrame) -> dict[str, Any]:
    """What a split (path, patient, label, subset) can support: patients shared between subsets, images of
    unknown patient, per subset the images and patients of each class, and a warning for each weakness."""
    known = split[split["patient"].astype(str) != UNKNOWN_PATIENT]
    patients = {name: set(known.loc[known["subset"] == name, "patient"]) for name in SUBSETS}
    leakage = {
        f"{a}_{b}_patients": len(patients[a] & patients[b])
        for a, b in (("train", "test"), ("train", "val"), ("val", "test"))
    }
    subsets: dict[str, Any] = {}
    warnings: list[str] = []
    duplicates = None
    if "duplicate_group" in split:
        sizes = split["duplicate_group"].value_counts()
        duplicates = {"groups": int((sizes > 1).sum()), "images": int(sizes[sizes > 1].sum())}
    for name in SUBSETS:
        rows = split[split["subset"] == name]
        if rows.empty:
            if name != "train":
                what = "validation" if name == "val" else "test"
                warnings.append(missing_subset_warning(what))
            continue
        subsets[name], problems = _subset_entry(name, rows, known[known["subset"] == name])
        warnings += problems
    if leakage["train_test_patients"]:
        warnings.append(
            f"{leakage['train_test_patients']} patient(s) have images in both the training and the test "
            f"subset: the test figures are optimistic for new patients."
        )
    unknown = int((split["patient"].astype(str) == UNKNOWN_PATIENT).sum())
    if unknown:
        warnings.append(
            f"{unknown} image(s) have no patient id (not C-NMC names): each was treated as a patient of "
            f"its own, so images of one patient may sit in two subsets."
        )
    report = {"leakage": leakage, "unknown_patient_images": unknown, "subsets": subsets, "warnings": warnings}
    if duplicates is not None:
        report["near_duplicates"] = duplicates  # kept in one subset each by the image split
    return report


def _subset_entry(name: str, rows: pd.DataFrame, rows_known: pd.DataFrame) -> tuple[dict[str, Any], list[str]]:
    """One subset's images and patients per class, and what they cannot support (a class absent, too few
    patients of a class for its figures to speak for the class)."""
    entry = {
        "images": int(len(rows)),
        "per_class": {label: int((rows["label"] == label).sum()) for label in DISPLAY_ORDER},
        "patients": {
            label: int(rows_known.loc[rows_known["label"] == label, "patient"].nunique()) for label in DISPLAY_ORDER
        },
    }
    absent = [label for label, count in entry["per_class"].items() if count == 0]
    if absent:
        return entry, [
            f"The {name} subset has no {' or '.join(absent)} image: its metrics cannot speak for "
            f"both classes (ROC AUC and the missing class's rows are undefined)."
        ]
    few = {label: n for label, n in entry["patients"].items() if n < MIN_PATIENTS_PER_CLASS}
    if name == "train" or rows_known.empty or not few:
        return entry, []
    return entry, [
        f"The {name} subset has "
        + ", ".join(f"{n} {label} patient{'s' * (n != 1)}" for label, n in few.items())
        + f" (fewer than {MIN_PATIENTS_PER_CLASS}): its figures speak for those patients, "
        "not for the class."
    ]
