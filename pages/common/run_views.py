"""Sections of the Results page: one run's figures with what they can support, cross-validation, grid, compare."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from pipeline.core.errors import PipelineError
from pipeline.evaluation.evaluate import CLASS_WEIGHT_NOTE, patient_summary
from pipeline.evaluation.figures import (
    patient_dots_figure,
    run_calibration_figure,
)
from pipeline.evaluation.intervals import interval_line
from pipeline.evaluation.metrics import Metrics
from pipeline.explain.report import build_report
from pipeline.inference.export import FORMATS, UNSUPPORTED, export_run
from pipeline.runs.catalog import intervals_of_test
from pipeline.runs.display import threshold_line
from pipeline.runs.folder import RunFolder
from pipeline.runs.selection import SELECTION_LABEL

from .check_views import other_subjects_section
from .widgets import figure_text


def integrity_banners(metrics: dict[str, Any]) -> None:
    """Patients shared by training and test (with the figure), then every other warning about the subsets."""
    leaked = (metrics.get("leakage") or {}).get("train_test_patients", 0)
    if leaked:
        st.error(
            f"**{leaked} patient(s) have images in both the training and the test subset** (image split): "
            "these test figures say how well the model knows these patients, not how it does on new ones.",
            icon=":material/warning:",
        )
    for warning in metrics.get("warnings") or []:
        if "both the training and the test" not in warning:
            st.warning(warning, icon=":material/report:")


def _card(column: Any, label: str, metrics: dict[str, Any], key: str, help_text: str) -> None:
    undefined = (metrics.get("undefined") or {}).get(key)
    column.metric(label, figure_text(metrics.get(key), undefined), help=undefined or help_text)


def metric_cards(metrics: dict[str, Any], predictions: pd.DataFrame | None = None) -> None:
    """Validation figures (what chose the run), then the test figures with the best constant classifier."""
    validation = metrics.get("validation") or {}
    if validation:
        st.markdown(
            f"**Validation** ({validation['n']} images; runs are chosen by {SELECTION_LABEL}, ROC AUC breaking "
            "ties, among runs on the same data and validation patients)"
        )
        cells = st.columns(4)
        _card(cells[0], "Validation balanced accuracy", validation, "balanced_accuracy", "Mean recall of the classes.")
        _card(cells[1], "Validation ROC AUC", validation, "roc_auc", "ALL positive.")
        cells[2].metric("Validation weighted F1", figure_text(Metrics.of(validation).figure("weighted_f1")))
    baseline = metrics.get("majority_baseline")
    views = ", averaged over 8 views" if metrics.get("tta") else ""
    scored_on = Metrics.of(metrics).scored_on
    how = "every patient scored once, by the fold model that held it out" if scored_on != "Test" else "evaluated once"
    st.markdown(
        f"**{scored_on}** ({metrics['n']} images, {how}{views})"
        + (
            f" · always answering {baseline['class']} would score accuracy {baseline['accuracy']:.3f}"
            if baseline
            else ""
        )
    )
    cells = st.columns(6)
    cells[0].metric(
        f"{scored_on} accuracy", figure_text(metrics["accuracy"]), help=f"Share of {scored_on.lower()} images right."
    )
    _card(
        cells[1],
        "Balanced accuracy",
        metrics,
        "balanced_accuracy",
        "Mean of the recall of ALL and of HEM: a class imbalance cannot flatter it.",
    )
    cells[2].metric(
        "Weighted F1",
        figure_text(Metrics.of(metrics).figure("weighted_f1")),
        help="F1 averaged over classes, weighted by support: the C-NMC challenge metric.",
    )
    _card(cells[3], "ROC AUC", metrics, "roc_auc", "Probability that a random ALL image scores above a random HEM.")
    _card(cells[4], "MCC", metrics, "mcc", "Matthews correlation: 0 = chance, 1 = perfect.")
    cells[5].metric(
        "Brier score", figure_text(metrics.get("brier")), help="Mean squared error of P(ALL); lower is better."
    )
    intervals = intervals_of_test(metrics, lambda: predictions)
    if interval_line(intervals):
        st.caption(f"{scored_on} figures with 95 % intervals: " + interval_line(intervals) + ".")
    threshold = threshold_line(metrics.get("threshold_check"))
    if threshold:
        st.caption(threshold)
    other_subjects_section(metrics)


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1 and images per class; an absent class says so instead of zeros."""
    rows = {
        row["class"]: {
            "precision": row["undefined"] or f"{row['precision']:.3f}",
            "recall": row["undefined"] or f"{row['recall']:.3f}",
            "F1": row["undefined"] or f"{row['f1']:.3f}",
            "images": row["images"],
        }
        for row in Metrics.of(metrics).per_class().to_dict(orient="records")
    }
    return pd.DataFrame(rows).T


def patients_section(predictions: pd.DataFrame, metrics: dict[str, Any]) -> None:
    """Results' per-patient view: each patient's mean P(ALL) and share of images right, as dots and a table."""
    scored_on = Metrics.of(metrics).scored_on.lower()
    st.markdown(f"**Per patient**: mean P(ALL) over the patient's {scored_on} images, called ALL at 0.5 or more")
    summary = patient_summary(predictions)
    if not summary.empty:
        st.plotly_chart(patient_dots_figure(summary), width="stretch")
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        column_config={
            "image_accuracy": st.column_config.NumberColumn("share of images right", format="%.3f"),
            "mean_prob_all": st.column_config.NumberColumn("mean P(ALL)", format="%.3f"),
            "called_by_mean_prob_all": "called (mean P(ALL) ≥ 0.5)",
        },
    )
    cells = st.columns(3)
    cells[0].metric(
        "Patients called right",
        figure_text(metrics.get("patient_accuracy")),
        help=f"Of {metrics.get('patients_counted', 0)} test patients.",
    )
    cells[1].metric(
        "Patient sensitivity",
        figure_text(metrics.get("patient_sensitivity")),
        help="ALL patients called ALL (undefined without ALL patients).",
    )
    cells[2].metric(
        "Patient specificity",
        figure_text(metrics.get("patient_specificity")),
        help="Healthy subjects called HEM (undefined without healthy subjects).",
    )


def fitted_on(scaling: dict[str, Any]) -> str:
    """What a temperature was fitted on, in words: validation images, or a final model's out-of-fold predictions."""
    if scaling.get("fitted_on") == "out-of-fold predictions":
        return f"the {scaling.get('out_of_fold_images', '?')} out-of-fold predictions themselves (in sample)"
    return f"the {scaling.get('validation_images', '?')} validation images only"


def calibration_section(metrics: dict[str, Any], config: dict[str, Any]) -> None:
    """The reliability diagram (before and after temperature scaling when the run fitted one) and what moves it."""
    if not metrics.get("calibration"):
        return
    st.plotly_chart(run_calibration_figure(metrics), width="stretch")
    scaling = metrics.get("temperature_scaling")
    if scaling and scaling.get("temperature"):
        st.caption(
            f"P(ALL) rescaled by temperature {scaling['temperature']:.2f}, fitted on {fitted_on(scaling)}; the class "
            "called never changes, so accuracy and ROC AUC are those of the model before scaling."
        )
        before, after = scaling["calibration_before"]["ece"], metrics["calibration"]["ece"]
        if after > before and scaling.get("fitted_on", "validation") == "validation":
            st.warning(
                f"Temperature scaling made the test subset's calibration worse (ECE {before:.3f} before, "
                f"{after:.3f} after): the validation patients' calibration did not carry over to the test "
                "patients.",
                icon=":material/report:",
            )
    elif scaling:
        st.caption(f"Not rescaled: {scaling['not_fitted']}.")
    if config.get("class_weight") or config.get("balance_patients"):
        st.caption(CLASS_WEIGHT_NOTE)


def evaluations_section(folder: RunFolder) -> None:
    """`evaluate` runs on other data, with the images left out because the run trained or validated on them."""
    evaluations = folder.evaluations()
    if not evaluations:
        return
    st.subheader("Evaluations on other data")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "evaluation": name,
                    "subset": metrics.get("subset"),
                    "images": metrics.get("n"),
                    "left out (seen: same file, cell name or pixels)": sum(
                        count
                        for reason, count in (metrics.get("excluded_seen_images") or {}).items()
                        if reason != "seen_patient"
                    ),
                    "images of seen patients (apart)": (metrics.get("seen_patients") or {}).get("n", 0),
                    "accuracy": metrics.get("accuracy"),
                    "balanced accuracy": metrics.get("balanced_accuracy"),
                    "ROC AUC": metrics.get("roc_auc"),
                    "weighted F1": Metrics.of(metrics).figure("weighted_f1"),
                }
                for name, metrics in evaluations.items()
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def take_away(folder: RunFolder, run_id: str, demo: bool, models_allowed: bool = True) -> None:
    """The report, exported models and the model file to download: each file is read only when its button is
    clicked; new exports are made only off the demo, and a demo offers models only where its host allows."""

    st.subheader("Take it away")
    columns = st.columns(4)
    if columns[0].button(
        "Build the HTML report", help="One self-contained file: figures, tables, explained examples; readable offline."
    ):
        with st.spinner("Building the report…"):
            st.session_state[f"report-{run_id}"] = build_report(folder.path, hide_paths=demo)
    if f"report-{run_id}" in st.session_state:
        columns[0].download_button(
            "Report (HTML)", st.session_state[f"report-{run_id}"], f"{run_id}-report.html", mime="text/html"
        )
    if not demo:
        fmt = columns[1].selectbox("Export as", FORMATS, help=f"ONNX: {UNSUPPORTED['onnx']}")
        if columns[1].button("Export", help="Checked against the run's model on test images."):
            try:
                with st.spinner(f"Exporting {fmt}…"):
                    export_run(folder.path, fmt)
            except PipelineError as error:
                st.error(str(error), icon=":material/error:")
    if not models_allowed:
        columns[2].caption("Model downloads are switched off on this host.")
        return
    for index, archive in enumerate(folder.exports()):
        columns[2].download_button(archive.name, archive.read_bytes, archive.name, key=f"export-{index}")
    if folder.has_model():
        suffix = folder.model_file.suffix
        columns[3].download_button(f"Model ({suffix})", folder.model_file.read_bytes, f"{run_id}{suffix}")
