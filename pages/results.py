"""Results: the runs, one run in depth with what its figures can support, cross-validation, grid, compare."""

import json

import streamlit as st

from pages.common import comparison_views, gallery_views, run_views
from pages.common.frame import through_the_app
from pages.common.loaders import predictions_of, runs_table
from pages.common.settings import demo_mode, model_download_allowed, run_folder
from pages.common.widgets import show_error, skipped_files, synthetic_warning
from pipeline.core.errors import PipelineError
from pipeline.evaluation.figures import confusion_matrix_figure, curves_figure, roc_figure
from pipeline.runs.display import provenance, spreadsheet_safe, without_server_paths
from pipeline.runs.selection import SELECTION_LABEL, rank_by_validation, run_flags

through_the_app()  # a page opened by its address on a fresh server comes back through streamlit_app.py

st.title(":material/insights: Results")
runs = runs_table()
if runs.empty:
    st.info(
        "No model yet: the demo model is being prepared (see **Home**)."
        if demo_mode()
        else "No runs yet: train one on the **Train** page.",
        icon=":material/model_training:",
    )
    st.stop()

runs["flags"] = runs.apply(run_flags, axis=1) if "warnings" in runs else ""
columns = [
    "run_id",
    "state",
    "data",
    "weights",
    "backbone",
    "mode",
    "split",
    "cv",
    "epochs",
    "batch_size",
    "val_weighted_f1",
    "weighted_f1",
    "balanced_accuracy",
    "roc_auc",
    "check_roc_auc",
    "check_healthy_called_all",
    "flags",
    "group",
    "error",
]
number = {"format": "%.3f"}
st.dataframe(
    runs[[c for c in columns if c in runs]],
    hide_index=True,
    width="stretch",
    column_config={
        "val_weighted_f1": st.column_config.NumberColumn(
            "validation weighted F1", help="What runs are chosen by.", **number
        ),
        "weighted_f1": st.column_config.NumberColumn(
            "test weighted F1", help="The C-NMC challenge metric (0–1).", **number
        ),
        "balanced_accuracy": st.column_config.NumberColumn("test balanced accuracy", **number),
        "roc_auc": st.column_config.NumberColumn("test ROC AUC", help="0.5 = chance.", **number),
        "check_roc_auc": st.column_config.NumberColumn(
            "ROC AUC, other subjects", help="On the other-subject check (cells of subjects never trained on).", **number
        ),
        "check_healthy_called_all": st.column_config.TextColumn("healthy called ALL, other subjects"),
        "error": st.column_config.TextColumn("error (failed or broken runs)"),
    },
)

finished = runs[runs["state"] == "completed"]["run_id"].tolist()
if not finished:
    st.info("No run has finished yet; progress is on " + ("**Home**." if demo_mode() else "the **Train** page."))
    st.stop()
one, crossval, grid, compare = st.tabs(["One run", "Cross-validation", "Grid (sweep)", "Compare runs"])
with crossval:
    comparison_views.crossval_section(runs)
with grid:
    comparison_views.grid_section(runs)
with compare:
    comparison_views.compare_section(runs, finished)

with one:
    ranked = rank_by_validation(runs)["run_id"].tolist()
    ordered = ranked + [run for run in finished if run not in ranked]
    default = st.session_state.get("run_id")
    run_id = st.selectbox(
        "Run",
        ordered,
        index=ordered.index(default) if default in ordered else 0,
        help=f"Ordered by {SELECTION_LABEL}, best first within each group of comparable runs "
        "(the same data and validation patients); runs not ranked come last.",
    )
    folder = run_folder(run_id)
    try:
        config, metrics = folder.config(), folder.metrics()
        history, predictions = folder.history(), predictions_of(folder)
        skipped = list(folder.skipped().itertuples(index=False, name=None))
    except (OSError, ValueError) as error:  # PipelineError is a ValueError
        show_error(PipelineError(f"Run {run_id} is broken: {error}"))
        st.stop()
    st.markdown(provenance(config, hide_paths=demo_mode()))
    synthetic_warning(config)
    run_views.integrity_banners(metrics)
    skipped_files(skipped, "of the data left out of this run because they do not read")
    run_views.metric_cards(metrics, predictions)

    left, right = st.columns(2)
    normalized = left.toggle("Normalize rows (recall per class)")
    left.plotly_chart(confusion_matrix_figure(metrics, normalized), width="stretch")
    right.markdown("**Per-class metrics** (as the paper's Table 3)")
    right.dataframe(run_views.per_class_table(metrics), width="stretch")
    if not history.empty:
        left, right = st.columns(2)
        left.plotly_chart(curves_figure(history, "accuracy"), width="stretch")
        right.plotly_chart(curves_figure(history, "loss"), width="stretch")
    if predictions is not None:
        left, right = st.columns(2)
        left.plotly_chart(roc_figure(predictions, metrics.get("roc_auc")), width="stretch")
        with right:
            run_views.calibration_section(metrics, config)
        run_views.patients_section(predictions, metrics)
        gallery_views.confusion_gallery(folder, predictions)
    run_views.evaluations_section(folder)
    st.subheader("Explanations ranked")
    gallery_views.explanation_ranking(folder)
    run_views.take_away(folder, run_id, demo_mode(), model_download_allowed())
    downloads = st.columns(2)
    downloads[0].download_button("Metrics (JSON)", lambda: json.dumps(metrics, indent=2), f"{run_id}-metrics.json")
    if predictions is not None:
        shown = without_server_paths(predictions, config.get("data_dir")) if demo_mode() else predictions
        downloads[1].download_button(
            "Predictions (CSV)",
            lambda: spreadsheet_safe(shown).to_csv(index=False),
            f"{run_id}-predictions.csv",
            help="Built when clicked.",
        )
