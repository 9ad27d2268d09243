"""The other-subject check: a model scored on labelled cells of subjects it never trained on (`--check DIR`), beside
the logistic regression on as-imaged features trained on the same cells. It is a check, never a fit: nothing here
or downstream learns from these cells (no weights, threshold, temperature, C or stopping); it reports, and the
selection rule (`pipeline.training.rule`) gates on what it reports.

metrics.json keeps it as its own section, `other_subjects`: `label`, `data` (the folder), `cells`, `subjects` (per
class), `roc_auc` and `balanced_accuracy` (value with its 95 % patient-bootstrap interval, as `intervals`),
`healthy_called_all` (`cells`, `of`, per subject `called_all` and `cells`), `reference` (`name`, its own figures and
`healthy_called_all`, and `paired`: this model minus the reference on the same patient resamples), `predictions`
(per cell: `cell`, `patient`, `label`, `prob_all`). A run folder without it reads as before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .intervals import format_interval, patient_bootstrap

SECTION = "other_subjects"
LABEL = "subjects of other folds, never trained on"
REFERENCE_NAME = "logistic regression (C = 1) on Lite0 features of the cells as imaged, trained on the same cells"


def healthy_called_all(predictions: pd.DataFrame) -> dict[str, Any]:
    """How many healthy (HEM) cells P(ALL) >= 0.5 calls ALL, in all and per healthy subject."""
    healthy = predictions[predictions["label"] == "HEM"]
    called = healthy["prob_all"].to_numpy(dtype=float) >= 0.5
    per_subject = {
        str(subject): {"called_all": int(called[(healthy["patient"] == subject).to_numpy()].sum()), "cells": int(n)}
        for subject, n in healthy["patient"].value_counts(sort=False).sort_index().items()
    }
    return {"cells": int(called.sum()), "of": len(healthy), "per_subject": per_subject}


def check_section(
    predictions: pd.DataFrame,
    reference: np.ndarray | None,
    data_dir: str | Path,
    reference_name: str = REFERENCE_NAME,
) -> dict[str, Any]:
    """The `other_subjects` section from a model's P(ALL) of the check's cells (`predictions`: path, patient, label,
    prob_all) and the reference's P(ALL) of the same cells (None: not measured)."""
    intervals = patient_bootstrap(predictions)
    probabilities = predictions["prob_all"].astype(float)
    section: dict[str, Any] = {
        "label": LABEL,
        "data": str(data_dir),
        "cells": len(predictions),
        "subjects": {
            label: int(predictions.loc[predictions["label"] == label, "patient"].nunique()) for label in ("ALL", "HEM")
        },
        "roc_auc": intervals["roc_auc"],
        "balanced_accuracy": intervals["balanced_accuracy"],
        "intervals": intervals,
        "healthy_called_all": healthy_called_all(predictions),
        "predictions": [
            {"cell": Path(str(row.path)).name, "patient": str(row.patient), "label": row.label, "prob_all": prob}
            for row, prob in zip(predictions.itertuples(index=False), probabilities, strict=True)
        ],
    }
    if reference is not None:
        theirs = predictions.assign(prob_all=np.asarray(reference, dtype=float))
        own = patient_bootstrap(theirs)
        section["reference"] = {
            "name": reference_name,
            "roc_auc": own["roc_auc"],
            "balanced_accuracy": own["balanced_accuracy"],
            "healthy_called_all": healthy_called_all(theirs),
            "paired": patient_bootstrap(predictions, baseline=theirs["prob_all"].to_numpy()),
        }
    return section


@dataclass(frozen=True)
class OtherSubjects:
    """A read-only view of a metrics dict's `other_subjects` section (absent: `OtherSubjects.of` gives None)."""

    values: dict[str, Any]

    @classmethod
    def of(cls, metrics: dict[str, Any] | None) -> OtherSubjects | None:
        """The section of `metrics`, or None when it has none."""
        section = (metrics or {}).get(SECTION)
        return cls(section) if isinstance(section, dict) else None

    def figure(self, name: str) -> float | None:
        """`roc_auc` or `balanced_accuracy`: the value."""
        return (self.values.get(name) or {}).get("value")

    @property
    def healthy(self) -> tuple[int, int]:
        """(healthy cells called ALL, healthy cells)."""
        found = self.values.get("healthy_called_all") or {}
        return int(found.get("cells", 0)), int(found.get("of", 0))

    @property
    def reference(self) -> dict[str, Any] | None:
        """The reference's figures and the paired difference, or None."""
        return self.values.get("reference")

    def lines(self) -> list[str]:
        """The section in words: what, the figures with intervals, healthy cells called ALL, the reference."""
        subjects = self.values.get("subjects") or {}
        called, healthy = self.healthy
        lines = [
            f"On {self.values.get('cells')} cells of {subjects.get('ALL', 0)} ALL patients and "
            f"{subjects.get('HEM', 0)} healthy subjects ({self.values.get('label', LABEL)}; "
            f"{self.values.get('data')}):",
            f"ROC AUC {format_interval(self.values.get('roc_auc') or {})}; balanced accuracy "
            f"{format_interval(self.values.get('balanced_accuracy') or {})}; healthy cells called ALL {called} of "
            f"{healthy}" + _per_subject(self.values.get("healthy_called_all") or {}),
        ]
        reference = self.reference
        if reference:
            paired = reference.get("paired") or {}
            theirs, of = (reference.get("healthy_called_all") or {}).get("cells"), healthy
            lines.append(
                f"The reference ({reference.get('name')}): ROC AUC {format_interval(reference.get('roc_auc') or {})}; "
                f"healthy cells called ALL {theirs} of {of}; this model minus it, paired: ROC AUC "
                f"{format_interval(paired.get('roc_auc') or {}, 3)}, balanced accuracy "
                f"{format_interval(paired.get('balanced_accuracy') or {}, 3)}"
            )
        return lines


def _per_subject(found: dict[str, Any]) -> str:
    subjects = [
        f"{name} {row['called_all']}/{row['cells']}"
        for name, row in (found.get("per_subject") or {}).items()
        if isinstance(row, dict)
    ]
    return f" ({', '.join(subjects)})" if subjects else ""
