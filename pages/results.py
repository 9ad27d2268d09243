"""Results: runs table, one run in depth (confusion matrix, curves, per-class table, ROC, errors), runs compared."""

import json

import pandas as pd
import streamlit as st

from pages.common.loaders import runs_table, table
from pages.common.settings import run_folder
from pages.common.widgets import show_error, synthetic_warning
from pipeline import runs as run_files
from pipeline.catalog import provenance
from pipeline.errors import PipelineError
from pipeline.evaluate import patient_summary
from pipeline.figures import confusion_matrix_figure, curves_figure, overlaid_curves_figure, roc_figure, sweep_heatmap
from pipeline.preprocess import thumbnail

st.title(":material/insights: Results")
runs = runs_table()
if runs.empty:
    st.info("No runs yet: train one on the **Train** page.", icon=":material/model_training:")
    st.stop()

columns = ["run_id", "state", "data", "weights", "backbone", "mode", "split", "epochs", "batch_size",
           "image_size", "test_accuracy", "weighted_f1", "roc_auc", "group"]
st.dataframe(runs[[c for c in columns if c in runs]], hide_index=True, width="stretch", column_config={
    "test_accuracy": st.column_config.NumberColumn("test accuracy", format="%.3f",
                                                   help="Share of test images classified correctly (0–1)."),
    "weighted_f1": st.column_config.NumberColumn("weighted F1", format="%.3f",
                                                 help="F1 averaged over classes, weighted by their support: the "
                                                      "C-NMC challenge metric (0–1)."),
    "roc_auc": st.column_config.NumberColumn("ROC AUC", format="%.3f", help="Area under the ROC curve (0.5 = chance)."),
})

finished = runs[runs["state"] == "completed"]["run_id"].tolist()
if not finished:
    st.info("No run has finished yet; progress is on the **Train** page.")
    st.stop()
default = st.session_state.get("run_id")
run_id = st.selectbox("Run", finished, index=finished.index(default) if default in finished else 0)
folder = run_folder(run_id)
try:
    config, metrics = folder.config(), folder.metrics()
except (OSError, ValueError) as error:
    show_error(PipelineError(f"Run {run_id} is broken: {error}"))
    st.stop()
st.markdown(provenance(config))
synthetic_warning(config)
if not metrics:
    st.warning("This run has no metrics file.")
    st.stop()

cells = st.columns(4)
cells[0].metric("Test accuracy", f"{metrics['accuracy']:.3f}", help=f"On {metrics['n']} test images (0–1).")
cells[1].metric("Weighted F1", f"{metrics['weighted avg']['f1-score']:.3f}",
                help="The C-NMC challenge metric (0–1).")
cells[2].metric("Macro F1", f"{metrics['macro avg']['f1-score']:.3f}", help="F1 averaged over ALL and HEM (0–1).")
cells[3].metric("ROC AUC", f"{metrics['roc_auc']:.3f}" if metrics.get("roc_auc") is not None else "—",
                help="Probability that a random ALL image scores above a random HEM image.")

left, right = st.columns(2)
normalized = left.toggle("Normalize rows (recall per class)")
left.plotly_chart(confusion_matrix_figure(metrics, normalized), width="stretch")
per_class = pd.DataFrame({name: metrics[name] for name in [*metrics["labels"], "macro avg", "weighted avg"]}).T
per_class = per_class.rename(columns={"f1-score": "F1", "support": "images"})
right.markdown("**Per-class metrics** (as the paper's Table 3)")
right.dataframe(per_class.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "F1": "{:.3f}",
                                        "images": "{:.0f}"}), width="stretch")

history = folder.history()
if not history.empty:
    left, right = st.columns(2)
    left.plotly_chart(curves_figure(history, "accuracy"), width="stretch")
    right.plotly_chart(curves_figure(history, "loss"), width="stretch")

predictions = table(folder, run_files.PREDICTIONS)
if predictions is not None:
    left, right = st.columns(2)
    left.plotly_chart(roc_figure(predictions, metrics.get("roc_auc")), width="stretch")
    patients = patient_summary(predictions)
    right.markdown("**Per patient** (majority by mean probability of ALL)")
    right.dataframe(patients, hide_index=True, width="stretch")
    wrong = predictions[predictions["label"] != predictions["predicted"]]
    st.subheader(f"Misclassified test images ({len(wrong)})")
    grid = st.columns(8)
    for index, row in enumerate(wrong.head(24).itertuples(index=False)):
        try:
            grid[index % 8].image(thumbnail(row.path), width="stretch",
                                  caption=f"true {row.label}, called {row.predicted} (P(ALL) {row.prob_all:.2f})")
        except PipelineError:
            grid[index % 8].caption(f"{row.path} is no longer readable")

downloads = st.columns(3)
downloads[0].download_button("Metrics (JSON)", json.dumps(metrics, indent=2), f"{run_id}-metrics.json")
if predictions is not None:
    downloads[1].download_button("Predictions (CSV)", predictions.to_csv(index=False), f"{run_id}-predictions.csv")
if folder.has_model():
    downloads[2].download_button("Model (.keras)", folder.model_path.read_bytes(), f"{run_id}.keras")

st.header("Compare runs")
chosen = st.multiselect("Runs to overlay", finished, default=finished[: min(3, len(finished))])
if chosen:
    histories = {run: run_folder(run).history() for run in chosen}
    column = st.radio("Curve", ["val_accuracy", "accuracy", "val_loss", "loss"], horizontal=True)
    st.plotly_chart(overlaid_curves_figure(histories, column), width="stretch")
groups = sorted(group for group in runs["group"].dropna().unique() if group)
if groups:
    group = st.selectbox("Grid (sweep)", groups)
    members = runs[(runs["group"] == group) & (runs["state"] == "completed")]
    if members.empty:
        st.info("No run of this grid has finished yet.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(sweep_heatmap(members, "test_accuracy", "Test accuracy"), width="stretch")
        right.plotly_chart(sweep_heatmap(members, "weighted_f1", "Weighted F1"), width="stretch")
