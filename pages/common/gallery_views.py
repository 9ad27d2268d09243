"""The Results page's pictures of one run: its test cells by confusion cell, and the ranking of explanation methods."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pipeline.core.errors import PipelineError
from pipeline.data.preprocess import thumbnail
from pipeline.evaluation.evaluate import confusion_cell, patient_errors
from pipeline.evaluation.figures import (
    road_bars_figure,
)
from pipeline.explain.pictures import saved_row_overlay
from pipeline.runs.folder import RunFolder

from .loaders import predictor_and_explainer
from .settings import demo_mode

CELLS = {
    "ALL called HEM (missed blasts)": ("ALL", "HEM"),
    "HEM called ALL (false alarms)": ("HEM", "ALL"),
    "ALL called ALL": ("ALL", "ALL"),
    "HEM called HEM": ("HEM", "HEM"),
}


def confusion_gallery(folder: RunFolder, predictions: pd.DataFrame) -> None:
    """A confusion-matrix cell's images, most confident first, with Grad-CAM on demand; then per patient."""

    st.subheader("The images behind the confusion matrix")
    counts = {name: len(confusion_cell(predictions, *cell)) for name, cell in CELLS.items()}
    name = st.segmented_control(
        "Cell", list(CELLS), default=list(CELLS)[0], format_func=lambda cell: f"{cell} · {counts[cell]}"
    )
    if not name:
        return
    images = confusion_cell(predictions, *CELLS[name])
    with_cam = st.toggle("Grad-CAM on each image (loads the model)")
    st.caption("Most confident first: for mistakes, the ones the model was surest of.")
    explainer = predictor = None
    if with_cam:
        predictor, explainer = predictor_and_explainer(folder.run_id)
    columns = st.columns(8)
    for index, row in enumerate(images.head(24).itertuples(index=False)):
        caption = f"{row.patient} · P(ALL) {row.prob_all:.2f} · sure {row.confidence:.0%}"
        try:
            if explainer is not None:
                picture = saved_row_overlay(predictor, explainer, row.path, row.predicted)
            else:
                picture = thumbnail(row.path)
            columns[index % 8].image(picture, caption=caption, width="stretch")
        except PipelineError:
            columns[index % 8].caption(f"{row.path} is no longer readable")
    if images.empty:
        st.caption("No image in this cell.")
    st.markdown("**Per patient**: which patients' cells the model gets wrong")
    st.dataframe(
        patient_errors(predictions),
        hide_index=True,
        width="stretch",
        column_config={
            "share_wrong": st.column_config.ProgressColumn("share wrong", min_value=0.0, max_value=1.0, format="%.2f"),
            "mean_prob_all": st.column_config.NumberColumn("mean P(ALL)", format="%.3f"),
        },
    )


def explanation_ranking(folder: RunFolder) -> None:
    """The ROAD ranking of explanation methods written by `explain-eval`, per layer."""
    rankings = folder.explanation_rankings()
    if not rankings:
        if not demo_mode():
            st.caption("Rank the explanation methods on this run: `python -m pipeline explain-eval RUN_DIR`.")
        return
    for layer, summary in rankings.items():
        st.markdown(
            f"**ROAD at {layer}** over {summary['images']} test images (higher: more faithful; a method "
            "should beat the foreground mask and random maps in the cell)"
        )
        st.plotly_chart(road_bars_figure(summary["methods"]), width="stretch", key=f"road-{layer}")
        st.dataframe(
            pd.DataFrame(
                [
                    {"method": figure["computed"], "ROAD": figure["road_mean"], "± std": figure["road_std"]}
                    for figure in summary["methods"].values()
                ]
            ).sort_values("ROAD", ascending=False),
            hide_index=True,
            width="stretch",
        )
