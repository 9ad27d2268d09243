"""The other-subject check of a model, shown beside its fold-1 figures (the model card on Home, Results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pipeline.evaluation.other_subjects import LABEL, OtherSubjects

from .settings import demo_mode


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def other_subjects_section(metrics: dict[str, Any] | None) -> None:
    """The check's figures (ROC AUC, balanced accuracy, healthy cells called ALL, the paired difference to the
    regression on as-imaged features) with their intervals, or a line saying the model was not checked."""
    check = OtherSubjects.of(metrics)
    if check is None:
        st.caption(
            f"Not scored on {LABEL} (`python -m pipeline check RUN --check DIR`): its figures speak for the patients "
            "of its own data only."
        )
        return
    values = check.values
    subjects = values.get("subjects") or {}
    folder = Path(str(values.get("data", ""))).name if demo_mode() else values.get("data")
    st.markdown(
        f"**{LABEL[0].upper() + LABEL[1:]}** ({values.get('cells')} cells of {subjects.get('ALL', 0)} ALL patients "
        f"and {subjects.get('HEM', 0)} healthy subjects, `{folder}`): a check, never fitted on"
    )
    called, healthy = check.healthy
    reference = check.reference or {}
    paired = (reference.get("paired") or {}).get("roc_auc") or {}
    cells = st.columns(4)
    cells[0].metric("ROC AUC, other subjects", _figure(check.figure("roc_auc")))
    cells[1].metric("Balanced accuracy, other subjects", _figure(check.figure("balanced_accuracy")))
    theirs = (reference.get("healthy_called_all") or {}).get("cells")
    cells[2].metric(
        "Healthy cells called ALL",
        f"{called} of {healthy}",
        help="Cells of healthy subjects this model calls ALL (P(ALL) >= 0.5)"
        + (f"; the reference calls {theirs}." if theirs is not None else "."),
    )
    cells[3].metric(
        "ROC AUC vs the reference",
        "-" if paired.get("value") is None else f"{paired['value']:+.3f}",
        help=f"This model minus the reference ({reference.get('name', 'not measured')}), paired on the same "
        "resamples of subjects.",
    )
    said = " ".join(line.rstrip(".") + "." for line in check.lines()[1:])
    st.caption(f"{said} With so few cells an interval is wide: it can reject a model, not rank.")
