"""Predict: upload images or pick one from the dataset; class, probability, Grad-CAM family and feature maps."""

import pandas as pd
import streamlit as st

from pages.common.loaders import current_dataset, predictor_and_explainer
from pages.common.settings import models, run_folder
from pages.common.widgets import show_error, synthetic_warning
from pipeline.catalog import provenance, run_config
from pipeline.errors import PipelineError
from pipeline.explain import DEFAULT_LAYER, METHODS, colorize, overlay, stage_layers
from pipeline.preprocess import read_image

st.title(":material/biotech: Predict")
runs = models()
if not runs:
    st.info("No trained model yet: train one on the **Train** page first.", icon=":material/model_training:")
    st.stop()
default = st.session_state.get("run_id")
run_id = st.selectbox("Model (run)", runs, index=runs.index(default) if default in runs else 0)
try:
    config = run_config(run_folder(run_id))
    st.markdown(provenance(config))
    synthetic_warning(config)
    predictor, explainer = predictor_and_explainer(run_id)
except PipelineError as error:
    show_error(error)
    st.stop()

uploads = st.file_uploader("Upload cell images", type=["bmp", "png", "jpg", "jpeg", "tif", "tiff"],
                           accept_multiple_files=True, help="Processed in memory and never stored.")
images: list[tuple[str, object]] = []
for upload in uploads or []:
    try:
        images.append((upload.name, predictor.predict_bytes(upload.getvalue(), upload.name)))
    except PipelineError as error:
        st.error(f"{upload.name}: {error}", icon=":material/error:")
if not uploads:
    try:
        paths = [record.path for record in current_dataset().records][:500]
    except PipelineError:
        paths = []
    if paths:
        path = st.selectbox("…or pick an image of the dataset", paths, format_func=lambda p: p.split("/")[-1])
        try:
            images.append((path.split("/")[-1], predictor.predict_image(read_image(path))))
        except PipelineError as error:
            show_error(error)
if not images:
    st.stop()

if len(images) > 1:
    summary = pd.DataFrame([{"image": name, "predicted": result["predicted"], "probability": result["probability"],
                             "prob_all": result["prob_all"]} for name, result in images])
    st.dataframe(summary, hide_index=True, width="stretch", column_config={
        "probability": st.column_config.NumberColumn("probability of the predicted class", format="%.3f"),
        "prob_all": st.column_config.NumberColumn("P(ALL)", format="%.3f")})
    st.download_button("Predictions (CSV)", summary.to_csv(index=False), "predictions.csv")
    name = st.selectbox("Explain image", [name for name, _ in images])
else:
    name = images[0][0]
result = dict(images)[name]

label = "ALL (leukemic blast)" if result["predicted"] == "ALL" else "HEM (normal)"
cells = st.columns(3)
cells[0].metric("Predicted class", label)
cells[1].metric("Probability", f"{result['probability']:.1%}", help="Softmax probability of the predicted class.")
cells[2].metric("P(ALL)", f"{result['prob_all']:.3f}", help="Probability of ALL; 0.5 or more is called ALL.")

st.subheader("Where the model looked")
controls = st.columns(3)
methods = controls[0].multiselect("Methods", METHODS, default=["gradcam"],
                                  help="Grad-CAM and LayerCAM are fast; Grad-CAM++ and Score-CAM take seconds.")
layers = list(dict.fromkeys([DEFAULT_LAYER, *reversed(stage_layers(predictor.model).values())]))
layer = controls[1].selectbox("Layer", layers, help="Deeper layers: coarser, more class-specific maps.")
opacity = controls[2].slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05)
if methods:
    panels = st.columns(len(methods) + 1)
    panels[0].image(result["input"], caption="Model input (resized + CLAHE)", width="stretch")
    for panel, method in zip(panels[1:], methods, strict=True):
        try:
            heatmap = explainer.heatmap(result["input"], method, layer)
        except PipelineError as error:
            panel.error(str(error))
            continue
        panel.image(overlay(result["input"], heatmap, opacity), width="stretch",
                    caption=f"{method} at {layer} (bright = more important, viridis)")
        faith = explainer.faithfulness(result["input"], heatmap)
        drops = pd.DataFrame({"pixels removed": [f"{f:.0%}" for f in faith["fractions"]],
                              "drop, most salient": faith["saliency_drop"], "drop, random": faith["random_drop"]})
        panel.dataframe(drops.style.format({"drop, most salient": "{:+.3f}", "drop, random": "{:+.3f}"}),
                        hide_index=True, width="stretch")
    st.caption("Faithfulness: how much the predicted class's probability falls when the most salient pixels are "
               "blacked out, against as many random pixels. A faithful map drops it more.")

st.subheader("Feature maps")
stages = list(stage_layers(predictor.model))
stage = st.select_slider("EfficientNet stage", stages, value=stages[-1])
grid = explainer.feature_maps(result["input"], [stage], channels=16)[stage]
st.image(colorize(grid, 640), caption=f"The 16 most active channels at the end of {stage} (viridis, each scaled "
         "to its own range)", width=640)
