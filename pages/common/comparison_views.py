"""The Results page's sections over many runs: cross-validation folds, the paper's grid, runs side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pipeline.core.config import TrainConfig
from pipeline.core.errors import PipelineError
from pipeline.evaluation.figures import (
    folds_strip_figure,
    overlaid_curves_figure,
    sweep_heatmap,
)
from pipeline.evaluation.intervals import interval_line
from pipeline.runs.crossval import FOLD_LABELS, FOLD_METRICS, fold_mean_intervals, fold_table, read_summary, summarize
from pipeline.runs.folder import RunFolder
from pipeline.runs.selection import SELECTION_LABEL, SELECTION_METRIC, best_per_cell, rank_by_validation
from pipeline.training.final import final_config
from pipeline.training.launch import launch

from .settings import demo_mode, ray_address, run_folder, runs_dir

FINAL_HELP = (
    "The folds' settings once more, on every patient: nobody is held out, so its figures are these folds' out-of-fold "
    "predictions, and its temperature is fitted on them."
)


def crossval_section(runs: pd.DataFrame) -> None:
    """Per-fold table and mean ± standard deviation of a patient-level cross-validation."""
    readable = runs[runs["state"] != "broken"]
    groups = sorted(
        {
            group
            for group, cv in zip(readable["group"], readable["cv"], strict=True)
            if isinstance(group, str) and group and isinstance(cv, str) and cv
        }
    )
    if not groups:
        st.info(
            "No cross-validation on this server."
            if demo_mode()
            else "No cross-validation yet: start one on the **Train** page or with `python -m pipeline crossval`."
        )
        return
    group = st.selectbox("Cross-validation", groups, index=len(groups) - 1)
    folders = [run_folder(run_id) for run_id in runs.loc[runs["group"] == group, "run_id"]]
    try:
        table = fold_table(folders)
    except (OSError, ValueError, PipelineError) as error:
        st.error(f"This cross-validation cannot be read: {error}", icon=":material/error:")
        return
    summary = summarize(table)
    st.markdown(
        f"**{summary['completed']} of {summary['folds']} folds completed.** Test patients partition the "
        "data: this mean ± standard deviation over folds is the figure to quote."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {"metric": name, "mean": figure["mean"], "std": figure["std"], "folds with a value": figure["folds"]}
                for name, figure in summary["metrics"].items()
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "mean": st.column_config.NumberColumn(format="%.3f"),
            "std": st.column_config.NumberColumn("± std", format="%.3f"),
        },
    )
    pooled = read_summary(group).get("pooled")
    if interval_line(pooled):
        st.caption(
            "Every patient's test predictions pooled over the folds, 95 % intervals: " + interval_line(pooled) + "."
        )
    shown = {name: label for name, label in FOLD_LABELS.items() if name in table}
    st.plotly_chart(folds_strip_figure(table, shown, fold_mean_intervals(table, list(shown))), width="stretch")
    st.caption(
        "Each dot is one fold's test patients; the bar is the mean, its whiskers the 95 % interval of the "
        "mean over folds (Student's t)."
    )
    _per_fold(table)
    if not demo_mode() and summary["completed"] == summary["folds"]:
        _final_model(group, folders[0], runs)


def _per_fold(table: pd.DataFrame) -> None:
    st.markdown("**Per fold** (test figures; the validation figure is what a fold's model was chosen by)")
    st.dataframe(
        table[["fold", "state", "test_patients", "test_images", "val_weighted_f1", *FOLD_METRICS]],
        hide_index=True,
        width="stretch",
    )


def _final_model(group: str, fold: RunFolder, runs: pd.DataFrame) -> None:
    """The cross-validation's final models, and a button that trains one on every patient in the background."""
    finals = runs.loc[runs.get("oof_group", pd.Series("", index=runs.index)) == group, "run_id"].tolist()
    if finals:
        st.caption("Its final model on every patient (figures out of fold): " + ", ".join(finals) + ".")
    if st.button("Train the final model on every patient", help=FINAL_HELP):
        try:
            config = final_config(TrainConfig.from_dict(fold.config()), group)
            (folder,) = launch([config], runs_dir(), group=f"{group}-final", ray_address=ray_address())
            st.success(f"Started {folder.run_id}: the same settings on every patient.", icon=":material/rocket_launch:")
        except PipelineError as error:
            st.error(str(error), icon=":material/error:")


def grid_section(runs: pd.DataFrame) -> None:
    """Results' view of a grid: the selection figure of each cell (epochs by batch size), test figure beside it."""
    groups = sorted(group for group in runs["group"].dropna().unique() if str(group).startswith("grid-"))
    if not groups:
        st.info(
            "No grid on this server."
            if demo_mode()
            else "No grid yet: run the paper's grid from the **Train** page or `python -m pipeline sweep`."
        )
        return
    group = st.selectbox("Grid (sweep)", groups)
    chosen = best_per_cell(runs[runs["group"] == group])
    if chosen.empty:
        st.info("No run of this grid has finished with a validation subset yet.")
        return
    st.plotly_chart(
        sweep_heatmap(
            chosen,
            SELECTION_METRIC,
            f"{SELECTION_LABEL.capitalize()} (chooses) with the chosen run's test balanced accuracy beside it",
            beside="balanced_accuracy",
        ),
        width="stretch",
    )


def compare_section(runs: pd.DataFrame, finished: list[str]) -> None:
    """Results' comparison of finished runs: figures side by side and curves overlaid."""
    ranked = rank_by_validation(runs)
    top_group = ranked[ranked["comparable"] == ranked["comparable"].iloc[0]] if not ranked.empty else ranked
    default = top_group["run_id"].tolist()[:3] or finished[:3]
    chosen = st.multiselect(
        "Runs to overlay",
        finished,
        default=[run for run in default if run in finished],
        help=f"Preselected: the best three by {SELECTION_LABEL} among comparable runs (the same "
        "data and validation patients).",
    )
    if chosen:
        histories = {run: run_folder(run).history() for run in chosen}
        column = st.radio("Curve", ["val_accuracy", "accuracy", "val_loss", "loss"], horizontal=True)
        st.plotly_chart(overlaid_curves_figure(histories, column), width="stretch")
